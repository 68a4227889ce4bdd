"""Per-layer output shapes and parameter counts: ``python -m downsample_lab.shapes [model overrides]``.

The classic demonstration: MaxPool2d(2) and a 2x2 stride-2 conv both halve H and W, the pool with no
parameters, the conv with k·k·C_in·C_out (no + C_out: a conv before BatchNorm has no bias); a k×k conv with
padding k//2 keeps H and W. Every layer's stride and padding are shown. Any input size works, e.g.
``input_size=[1,3,256,256]``.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from downsample_lab import cli
from downsample_lab.config import ModelConfig, ShapesConfig, config_dir, validate
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.models import build_model, describe_model
from downsample_lab.models.summary import count_params, forward_flops, layer_table

BIAS_NOTE = (
    "Convs followed by BatchNorm have no bias (bias=False), so their formula is k·k·C_in·C_out without the\n"
    "+ C_out of a biased conv: BatchNorm subtracts the batch mean, which would cancel a bias, and adds its own\n"
    "shift (β, half of its 2·C parameters). A stride-s conv or pool divides H and W by s; a k×k conv with\n"
    "padding k//2 and stride 1 keeps them."
)


def format_shapes(cfg: DictConfig) -> str:
    """The table ``shapes`` prints, for a validated config."""
    m: ModelConfig = OmegaConf.to_object(cfg.model)
    size = tuple(cfg.input_size)
    model = build_model(m)
    try:
        rows = layer_table(model, size)
    except (
        RuntimeError,
        ValueError,
    ) as err:  # a pooling or conv output of size 0: the input is too small for the model
        raise UserError(_too_small(m, size, err)) from None
    head = f"{describe_model(m)}; input {'x'.join(map(str, size))}"
    lines = [
        head,
        "",
        f"{'layer':<22} {'type':<17} {'output shape':<18} {'stride':>6} {'pad':>4} {'params':>10}  formula",
    ]
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(
            f"{r.name:<22} {r.kind:<17} {shape:<18} {r.stride:>6} {r.padding:>4} {r.params:>10,}  {r.formula}"
        )
    flops = forward_flops(model, (1, *size[1:]))
    lines += [
        "",
        f"total parameters: {count_params(model):,}",
        f"forward FLOPs per image: {flops:,} ({flops / 1e6:.1f} MFLOPs, torch.utils.flop_counter)",
    ]
    if any(isinstance(m, nn.Conv2d) and m.bias is None for m in model.modules()):
        lines += ["", BIAS_NOTE]
    return "\n".join(lines)


def _too_small(m: ModelConfig, size: tuple[int, ...], err: Exception) -> str:
    # The smallest power-of-two square input that passes, found on the meta device (shapes only, no compute).
    with torch.device("meta"):
        model = build_model(m).eval()
    fits = None
    for side in (2**i for i in range(1, 13)):
        try:
            model(torch.zeros(1, 3, side, side, device="meta"))
        except (RuntimeError, ValueError):
            continue
        fits = side
        break
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    hint = f"; e.g. input_size=[{size[0]},3,{fits},{fits}] fits" if fits else ""
    return f"input_size=[{','.join(map(str, size))}] is too small for {describe_model(m)} ({reason}){hint}"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="shapes")
def _main(cfg: DictConfig) -> None:
    try:
        print(format_shapes(validate(cfg, ShapesConfig)))
    except UserError as err:
        exit_with_error(err)


def main() -> None:
    """Console-script and ``python -m`` entry point."""
    cli.run(_main, "shapes", ShapesConfig)


if __name__ == "__main__":
    main()
