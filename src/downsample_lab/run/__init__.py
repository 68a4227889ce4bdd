"""A run's lifecycle, around what Lightning runs (:mod:`downsample_lab.engine`):

- :mod:`.argv`: the command line before Hydra reads it (one-line errors, a resumed run's saved overrides);
- :mod:`.resolvers`: the resolvers the YAML configs call, registered by each entry point;
- :mod:`.job`: the job wrapper: ``status.json``, one-line user errors, Ctrl-C and SIGTERM, exit codes;
- :mod:`.status`: ``status.json`` itself (torch-free: the report reads it too);
- :mod:`.resume`: resuming a run or a sweep from its directory, and the commands that go on;
- :mod:`.sweep`: a sweep's jobs, their names, the launcher, and every job checked before the first starts;
- :mod:`.summary`: the sweep's closing summary;
- :mod:`.times` and :mod:`.clock`: where a job's wall time goes;
- :mod:`.ddp`: DDP inside a job.
"""
