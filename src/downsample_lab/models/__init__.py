"""Model code: the downsampling layers, the CNN that uses them, the airbench-class FastNet, the All-CNN family.

- :mod:`.names`: the valid names (strategies, models, padding modes), torch-free;
- :mod:`.config`: the ``model`` config group's schema and value rules, torch-free;
- :mod:`.downsample`: the strategies' layers, chosen by name (``create_downsample("maxpool", 64)``);
- :mod:`.cnn`, :mod:`.fast`, :mod:`.allcnn`: the networks; :mod:`.factory`: :func:`build_model` from a config;
- :mod:`.summary`: parameter and FLOP counts, the layer table of ``shapes``.

The names and the config are imported here at once; the torch modules when first used, so that the schema and
``--help`` do not import torch.
"""

from typing import Any

from downsample_lab.models.names import DOWNSAMPLE_NAMES, MODEL_NAMES, PADDING_MODES

__all__ = [
    "DOWNSAMPLE_NAMES",
    "MODEL_NAMES",
    "PADDING_MODES",
    "build_model",
    "create_downsample",
    "describe_model",
    "effective_widths",
]

_LAZY = {
    "build_model": "factory",
    "describe_model": "factory",
    "effective_widths": "factory",
    "create_downsample": "downsample",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
