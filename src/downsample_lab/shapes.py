"""Per-layer output shapes and parameter counts: ``python -m downsample_lab.shapes [model overrides]``.

The classic demonstration: MaxPool2d(2) and a 2x2 stride-2 conv both halve H and W, the pool with no
parameters, the conv with k·k·C_in·C_out (no + C_out: a conv before BatchNorm has no bias); a k×k conv with
padding k//2 keeps H and W. Every layer's stride and padding are shown. Any input size works, e.g.
``input_size=[1,3,256,256]``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from downsample_lab.config import ShapesConfig, config_dir, validate
from downsample_lab.errors import UserError, exit_with_error
from downsample_lab.run import argv, resolvers

# The YAML configs call these resolvers: registered where the entry point is loaded (see downsample_lab.train).
resolvers.register()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="shapes")
def _main(cfg: DictConfig) -> None:
    try:
        cfg = validate(cfg, ShapesConfig)
        from downsample_lab.models.summary import format_shapes  # torch: once the config is valid

        print(format_shapes(cfg))
    except UserError as err:
        exit_with_error(err)


def main() -> None:
    """Console-script and ``python -m`` entry point."""
    argv.run(_main, "shapes", ShapesConfig)


if __name__ == "__main__":
    main()
