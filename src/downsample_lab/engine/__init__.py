"""What Lightning runs: the LightningModule and what it is fitted with.

- :mod:`.classifier`: :class:`~.classifier.Classifier`, the LightningModule around a network of ``models``
  (training, validation and test steps, the metrics, the optimiser of ``optim``, the recipe's callbacks);
- :mod:`.testtime`: test-time evaluation: TTA, shift consistency and the shift-robustness curves;
- :mod:`.callbacks`: throughput, checkpoints and the run state, the non-finite-loss stop, the console, and
  :func:`~.callbacks.fit_callbacks`, the list every fit uses;
- :mod:`.trainer`: the Trainer from the ``trainer`` group, and the TensorBoard logger;
- :mod:`.hparams`: TensorBoard's HParams tab.
"""
