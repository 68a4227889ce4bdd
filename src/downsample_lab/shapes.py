"""Per-layer output shapes and parameter counts: ``python -m downsample_lab.shapes [model overrides]``.

The classic demonstration: MaxPool2d(2) and a 2x2 stride-2 conv both halve H and W, the pool with no
parameters, the conv with k·k·C_in·C_out; a k×k conv with padding k//2 keeps H and W. Any input size works,
e.g. ``input_size=[1,3,256,256]``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from downsample_lab.config import ShapesConfig, config_dir, validate
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.models import build_model, describe_model
from downsample_lab.models.summary import count_params, forward_flops, layer_table


def format_shapes(cfg: DictConfig) -> str:
    """The table ``shapes`` prints, for a validated config."""
    m = cfg.model
    size = tuple(cfg.input_size)
    model = build_model(m)
    rows = layer_table(model, size)
    head = f"{describe_model(m)}; input {'x'.join(map(str, size))}"
    lines = [head, "", f"{'layer':<22} {'type':<17} {'output shape':<18} {'params':>10}  formula"]
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<22} {r.kind:<17} {shape:<18} {r.params:>10,}  {r.formula}")
    flops = forward_flops(model, (1, *size[1:]))
    lines += [
        "",
        f"total parameters: {count_params(model):,}",
        f"forward FLOPs per image: {flops:,} ({flops / 1e6:.1f} MFLOPs, torch.utils.flop_counter)",
    ]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="shapes")
def main(cfg: DictConfig) -> None:
    """Console-script and ``python -m`` entry point."""
    try:
        print(format_shapes(validate(cfg, ShapesConfig)))
    except UserError as err:
        exit_with_error(err)


if __name__ == "__main__":
    main()
