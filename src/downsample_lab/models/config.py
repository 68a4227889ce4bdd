"""The ``model`` config group: its schema (the YAML files under ``configs/model/`` give the values) and its
value rules. Torch-free; the one rule that builds models (``model.match_params``) imports them when it applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from downsample_lab.choice import choices
from downsample_lab.errors import ConfigError, check_value, shown
from downsample_lab.models.names import DOWNSAMPLE_NAMES, MODEL_NAMES, PADDING_MODES, ZERO_PADDING_ONLY

ModelName = choices("ModelName", MODEL_NAMES, __name__)
Downsample = choices("Downsample", DOWNSAMPLE_NAMES, __name__)
PaddingMode = choices("PaddingMode", PADDING_MODES, __name__)


@dataclass
class ModelConfig:
    name: ModelName = MISSING
    """`cnn` (the study's CNN), `fast` (the airbench-class network), or an All-CNN model: `model_c`,
    `strided_cnn_c`, `convpool_cnn_c`, `all_cnn_c` (choose with `model=<name>`)
    """
    widths: list[int] = MISSING
    """channels of each stage; its length is the number of stages (All-CNN: two, `[96,192]`; fast: three,
    `[64,256,256]`)
    """
    dropout: float = MISSING
    """cnn, fast: before the linear head; All-CNN (`0.5`): after each downsampling step"""
    channels_last: bool = MISSING
    """NHWC memory format for the model and its input batches"""
    compile: bool = MISSING
    """`torch.compile` the network"""
    # model.name=cnn and fast
    downsample: Downsample | None = None
    """cnn, fast: `maxpool`, `conv`, `conv3`, `avgpool`, `blurpool`, `stride`, `conv_avg`, `aps` or `maxavg`"""
    padding_mode: PaddingMode | None = None
    """cnn, fast: how every conv pads, `zeros`, `circular` or `reflect` (fast: the stem too); `blurpool`
    needs `zeros`
    """
    # model.name=cnn only
    kernel_size: int | None = None
    """cnn: odd kernel of every stride-1 conv (padding k//2 keeps H and W)"""
    blocks: int | None = None
    """cnn: conv-BN-ReLU blocks per stage, before the stage's downsampling layer"""
    match_params: bool | None = None
    """cnn: scale the widths so the arm has the `conv` arm's parameter count (within 2%)"""
    # model.name=fast only (downsample too)
    whiten_bias_epochs: int | None = None
    """fast: epochs during which the whitening stem's bias trains"""
    # the All-CNN family only
    batch_norm: bool | None = None
    """All-CNN: BatchNorm after each conv (the paper had none; `experiment=allcnn` sets `false`)"""


_CNN_ONLY = ("downsample", "padding_mode", "kernel_size", "blocks", "match_params")
_ALLCNN_ONLY = ("batch_norm",)
_FAST_ONLY = ("downsample", "padding_mode", "whiten_bias_epochs")
# The keys each model takes beyond the common ones.
_MODEL_KEYS = {"cnn": _CNN_ONLY, "fast": _FAST_ONLY}


def _owner(key: str) -> str:
    if key in _ALLCNN_ONLY:
        return "the All-CNN models"
    return " and ".join(f"model.name={name}" for name, keys in _MODEL_KEYS.items() if key in keys)


def check_model(m: DictConfig) -> None:
    """The value rules of the ``model`` group (merged into :class:`ModelConfig`); raise ConfigError."""
    own = _MODEL_KEYS.get(m.name, _ALLCNN_ONLY)
    foreign = tuple(k for k in {*_CNN_ONLY, *_ALLCNN_ONLY, *_FAST_ONLY} if k not in own)
    for key in own:
        if m[key] is None:
            raise ConfigError(f"model.{key} has no value; model.name={m.name} needs it")
    for key in sorted(foreign):
        if m[key] is not None:
            raise ConfigError(
                f"model.{key}={shown(m[key])} does not apply to model.name={m.name}; remove it (it is for "
                f"{_owner(key)})"
            )
    check_value(len(m.widths) > 0 and all(w > 0 for w in m.widths), "model.widths", list(m.widths),
                "give one positive width per stage, e.g. [64,128,256]")  # fmt: skip
    check_value(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "use a probability in [0, 1)")
    if m.downsample is not None and str(m.downsample) in ZERO_PADDING_ONLY:
        check_value(m.padding_mode == "zeros", "model.padding_mode", m.padding_mode,
                    f"model.downsample={m.downsample} pads with zeros only; use model.padding_mode=zeros")  # fmt: skip
    if m.name == "fast":
        check_value(len(m.widths) == 3, "model.widths", list(m.widths),
                    "model.name=fast has three groups, e.g. [64,256,256]")  # fmt: skip
        check_value(m.whiten_bias_epochs >= 0, "model.whiten_bias_epochs", m.whiten_bias_epochs,
                    "use 0 (never train the whitening bias) or a number of epochs")  # fmt: skip
        return
    if m.name != "cnn":
        check_value(len(m.widths) == 2, "model.widths", list(m.widths),
                    "the All-CNN models have two stages, e.g. [96,192]")  # fmt: skip
        return
    k = m.kernel_size
    check_value(k > 0 and k % 2 == 1, "model.kernel_size", k,
                "use an odd positive size (3, 5 or 7) so padding k//2 keeps H and W")  # fmt: skip
    check_value(m.blocks >= 1, "model.blocks", m.blocks, "use at least 1 conv block per stage")
    if m.match_params:
        from downsample_lab.models.factory import effective_widths  # builds models on the meta device: torch

        try:
            effective_widths(m)
        except ValueError as err:
            raise ConfigError(str(err)) from None
