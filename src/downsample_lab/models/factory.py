"""Build the network named by the ``model`` config group, matching parameter counts when asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from downsample_lab.models.allcnn import ALLCNN_VARIANTS, AllCNNC
from downsample_lab.models.cnn import DownsampleCNN
from downsample_lab.models.fast import FastNet

MODEL_NAMES = ("cnn", "fast", *ALLCNN_VARIANTS)
"""Valid values of ``model.name``."""

MATCH_REFERENCE = "conv"
"""With ``model.match_params=true`` every arm is sized to the parameter count of this arm at ``model.widths``."""

MATCH_TOLERANCE = 0.02


def _cnn(model_cfg: Mapping[str, Any], widths: list[int], downsample: str | None = None) -> DownsampleCNN:
    return DownsampleCNN(
        widths=widths,
        blocks=int(model_cfg["blocks"]),
        kernel_size=int(model_cfg["kernel_size"]),
        downsample=downsample or str(model_cfg["downsample"]),
        dropout=float(model_cfg["dropout"]),
    )


def _params(model_cfg: Mapping[str, Any], widths: list[int], downsample: str | None = None) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return sum(p.numel() for p in _cnn(model_cfg, widths, downsample).parameters())


def effective_widths(model_cfg: Mapping[str, Any]) -> list[int]:
    """The stage widths the CNN is built with.

    ``model.widths`` as given, unless ``model.match_params`` is true: then all widths are scaled by one common
    factor so that the parameter count lands within 2% of the ``conv`` arm's at ``model.widths`` — the
    pool-based arms (no downsampling weights) are widened, ``conv3`` (9·C·C per downsampling) is narrowed.
    """
    widths = [int(w) for w in model_cfg["widths"]]
    if not model_cfg.get("match_params") or model_cfg["downsample"] == MATCH_REFERENCE:
        return widths
    target = _params(model_cfg, widths, MATCH_REFERENCE)

    def scaled(scale: float) -> list[int]:
        return [max(1, round(w * scale)) for w in widths]

    lo, hi = 0.2, 5.0
    for _ in range(30):  # bisection on the common scale; the count grows with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _params(model_cfg, scaled(mid)) < target else (lo, mid)
    best = min((scaled(lo), scaled(hi)), key=lambda ws: abs(_params(model_cfg, ws) - target))
    if abs(_params(model_cfg, best) - target) > MATCH_TOLERANCE * target:
        raise ValueError(
            f"model.match_params cannot bring {model_cfg['downsample']} within 2% of {target:,} parameters "
            f"with widths near {best}; use larger model.widths"
        )
    return best


def describe_model(model_cfg: Mapping[str, Any]) -> str:
    """One line for logs: the architecture, and the widths it was built with when they differ from the config."""
    if model_cfg.get("name", "cnn") == "fast":
        return f"fast (airbench-class) with {model_cfg['downsample']} downsampling, widths={list(model_cfg['widths'])}"
    if model_cfg.get("name", "cnn") != "cnn":
        return f"{model_cfg['name']} widths={list(model_cfg['widths'])}"
    text = f"cnn with {model_cfg['downsample']} downsampling, kernel {model_cfg['kernel_size']}"
    widths = effective_widths(model_cfg)
    if widths != list(model_cfg["widths"]):
        way = "widened" if sum(widths) > sum(model_cfg["widths"]) else "narrowed"
        text += (
            f", widths {way} from {list(model_cfg['widths'])} to {widths} to match the conv arm's parameters"
        )
    return text


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """The network of the ``model`` config group (a validated DictConfig or a plain dict)."""
    name = model_cfg.get("name", "cnn")
    if name == "cnn":
        return _cnn(model_cfg, effective_widths(model_cfg))
    if name == "fast":
        return FastNet(
            widths=[int(w) for w in model_cfg["widths"]],
            downsample=str(model_cfg["downsample"]),
            dropout=float(model_cfg["dropout"]),
        )
    return AllCNNC(
        name,
        widths=[int(w) for w in model_cfg["widths"]],
        dropout=float(model_cfg["dropout"]),
        batch_norm=bool(model_cfg["batch_norm"]),
    )
