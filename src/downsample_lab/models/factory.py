"""Build the network named by the ``model`` config group, matching parameter counts when asked."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from torch import nn

from downsample_lab.models.allcnn import AllCNNC
from downsample_lab.models.cnn import DownsampleCNN
from downsample_lab.models.fast import FastNet
from downsample_lab.models.names import MATCH_REFERENCE

if TYPE_CHECKING:
    from downsample_lab.models.config import ModelConfig


MATCH_TOLERANCE = 0.02


def _cnn(model_cfg: ModelConfig, widths: list[int], downsample: str | None = None) -> DownsampleCNN:
    return DownsampleCNN(
        widths=widths,
        blocks=model_cfg.blocks,
        kernel_size=model_cfg.kernel_size,
        downsample=str(downsample or model_cfg.downsample),
        dropout=model_cfg.dropout,
        padding_mode=_padding_mode(model_cfg),
    )


def _padding_mode(model_cfg: ModelConfig) -> str:
    # None: a checkpoint written before model.padding_mode existed, when every conv padded with zeros
    return str(model_cfg.padding_mode or "zeros")


def effective_widths(model_cfg: ModelConfig) -> list[int]:
    """The stage widths the CNN is built with.

    ``model.widths`` as given, unless ``model.match_params`` is true: then all widths are scaled by one common
    factor so that the parameter count lands within 2% of the ``conv`` arm's at ``model.widths`` — the
    pool-based arms (no downsampling weights) are widened, ``conv3`` (9·C·C per downsampling) is narrowed.
    Computed once per process for a given model (a 30-step bisection over models on the meta device); the
    validation, the model, its log line and the HParams all ask.
    """
    m = model_cfg
    if not m.match_params or m.downsample == MATCH_REFERENCE:
        return list(m.widths)
    key = (tuple(m.widths), m.blocks, m.kernel_size, str(m.downsample), _padding_mode(m))
    return list(_matched_widths(*key))


@functools.cache
def _matched_widths(
    widths: tuple[int, ...], blocks: int, kernel_size: int, downsample: str, padding_mode: str
) -> tuple[int, ...]:
    def params(ws: list[int], strategy: str) -> int:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            net = DownsampleCNN(ws, blocks, kernel_size, strategy, dropout=0.0, padding_mode=padding_mode)
            return sum(p.numel() for p in net.parameters())

    target = params(list(widths), MATCH_REFERENCE)

    def scaled(scale: float) -> list[int]:
        return [max(1, round(w * scale)) for w in widths]

    lo, hi = 0.2, 5.0
    for _ in range(30):  # bisection on the common scale; the count grows with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if params(scaled(mid), downsample) < target else (lo, mid)
    best = min((scaled(lo), scaled(hi)), key=lambda ws: abs(params(ws, downsample) - target))
    if abs(params(best, downsample) - target) > MATCH_TOLERANCE * target:
        raise ValueError(
            f"model.match_params cannot bring {downsample} within 2% of {target:,} parameters "
            f"with widths near {best}; use larger model.widths"
        )
    return tuple(best)


def describe_model(model_cfg: ModelConfig) -> str:
    """One line for logs: the architecture, and the widths it was built with when they differ from the config."""
    m, widths = model_cfg, list(model_cfg.widths)
    padding = f", {m.padding_mode} padding" if _padding_mode(m) != "zeros" else ""
    if m.name == "fast":
        return f"fast (airbench-class) with {m.downsample} downsampling{padding}, widths={widths}"
    if m.name != "cnn":
        return f"{m.name} widths={widths}"
    text = f"cnn with {m.downsample} downsampling{padding}, kernel {m.kernel_size}"
    built = effective_widths(m)
    if built != widths:
        way = "widened" if sum(built) > sum(widths) else "narrowed"
        text += f", widths {way} from {widths} to {built} to match the conv arm's parameters"
    return text


def build_model(model_cfg: ModelConfig) -> nn.Module:
    """The network of the ``model`` config group (a :class:`~downsample_lab.models.config.ModelConfig`)."""
    m = model_cfg
    if m.name == "cnn":
        return _cnn(m, effective_widths(m))
    if m.name == "fast":
        return FastNet(
            widths=list(m.widths),
            downsample=str(m.downsample),
            dropout=m.dropout,
            padding_mode=_padding_mode(m),
        )
    return AllCNNC(str(m.name), widths=list(m.widths), dropout=m.dropout, batch_norm=bool(m.batch_norm))
