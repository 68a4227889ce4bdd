"""The config: every key a user can set, its type and what it may be; torch-free.

- :mod:`.schema`: the root schema of each task (train, eval, shapes, bench) and the groups no domain owns
  (``trainer``, ``eval``, ``checkpoint``, ``bench``); each domain owns its own group (``models.config``,
  ``data.config``, ``optim.config``);
- :mod:`.validate`: :func:`validate` (schema and value rules, one sentence naming the key), :func:`typed`,
  :func:`plain`;
- :mod:`.keys`: what each key does, for ``--help`` and docs/configuration.md.
"""

from downsample_lab.config.schema import (
    BenchConfig,
    EvalConfig,
    EvalOptions,
    ShapesConfig,
    TrainConfig,
    TrainerConfig,
    config_dir,
)
from downsample_lab.config.validate import plain, typed, validate

__all__ = [
    "BenchConfig",
    "EvalConfig",
    "EvalOptions",
    "ShapesConfig",
    "TrainConfig",
    "TrainerConfig",
    "config_dir",
    "plain",
    "typed",
    "validate",
]
