"""The optimiser side of a run: the ``optim`` config group (:mod:`.config`), the optimiser, its schedule and
the training loss (:mod:`.build`), and airbench94's lookahead (:mod:`.lookahead`)."""
