"""Training throughput: ``python -m downsample_lab.bench [overrides]`` times a minimal hand-written PyTorch loop
against the project's Lightning path, same model, batch and precision, in alternating windows.

One module for each part (as :mod:`downsample_lab.report` has):

- :mod:`.main`: the command: the config's checks, every strategy in turn, the record (``bench.json``);
- :mod:`.strategy`: both paths of one strategy; :mod:`.record`: its JSON entry and the printed table;
- :mod:`.rawloop`: path (a), the hand-written loop; :mod:`.lightning`: path (b), ``Trainer.fit`` with the
  callbacks ``train`` runs, timed in windows interleaved with (a);
- :mod:`.machine`: the hardware, library versions and memory figures a record carries.
"""
