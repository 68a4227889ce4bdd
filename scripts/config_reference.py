"""Write docs/configuration.md, the reference of every config key, from the config schema (each key's
docstring, see downsample_lab.config.keys) and the YAML defaults, so that it cannot drift from the code.

    python scripts/config_reference.py          # rewrite docs/configuration.md
    python scripts/config_reference.py --check  # exit 1 if it differs from what the schema gives (the tests)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from downsample_lab.config import BenchConfig, EvalConfig, ShapesConfig, TrainConfig, config_dir
from downsample_lab.config.keys import schema_keys
from downsample_lab.run import resolvers
from downsample_lab.study import flatten

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TOOLS = {"train": TrainConfig, "eval": EvalConfig, "shapes": ShapesConfig, "bench": BenchConfig}
IF_GPU = re.compile(r"^\$\{if_gpu:\$\{trainer\.accelerator\},([^,]+),([^}]+)\}$")

INTRO = """\
# Configuration reference

Every key of every tool, with its default and what it does: generated from the config schema (the docstring
under each field of `src/downsample_lab/config/schema.py`, `models/config.py`, `data/config.py` and
`optim/config.py`) by `python scripts/config_reference.py`; a test fails when this file and the schema differ.
Each tool's `--help` lists the same keys with the values that command would run with on your machine
(`python -m downsample_lab.train --help model=fast` shows the fast model's).

Every key is checked before any data is loaded: an unknown key, a wrong type or an invalid value stops the run
with one line naming the key and what is valid, and exit code 2. A mistyped key or config name is caught
before Hydra composes anything, with a suggestion (`model.downsampl=conv` → "did you mean
model.downsample?", `model=cnnn` → "did you mean cnn?"); so are an override Hydra cannot parse (a value with
`=`, `,`, `[` or `~`, such as a sweep job's directory, must be quoted: `'hydra.run.dir="<dir>"'`), a sweep
experiment (`experiment=ablation*`, `allcnn*`) without `-m`, and `trainer=gpu` or `trainer=ddp` on a machine
without a CUDA GPU. A sweep (`-m`) checks every job's config this way before its first job starts, every
combination of the swept values (each seed once): a bad value anywhere stops it with the same line naming the
job, and no directory is created. Defaults are in `configs/` (the `default` column: the tool's own config; the
experiments under `configs/experiment/` set others). Hydra's own keys work as usual, e.g. `hydra.run.dir=...`.
A training run's HParams (TensorBoard, the report) hold two entries that are recorded, not set, so no command
takes them: `model.effective_widths` (the widths a `model=cnn` network was built with) and `data.digest` (a
checksum of the images and labels it read: [studies.md](studies.md#reproduce-the-ablation)).
"""


def _defaults(tool: str) -> dict[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(tool)
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and (m := IF_GPU.match(value)):
            out[key] = f"`{m.group(2).strip()}` on a CPU, `{m.group(1).strip()}` on a GPU"
        else:
            out[key] = f"`{_text(OmegaConf.select(cfg, key))}`"
    return out


def _text(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return "(required)" if value == "???" else str(value)


def reference() -> str:
    """The text of docs/configuration.md."""
    resolvers.register()
    rows: dict[str, dict[str, Any]] = {}
    for tool, schema in TOOLS.items():
        defaults = _defaults(tool)
        for key in schema_keys(schema):
            row = rows.setdefault(key.name, {"doc": key.doc, "kind": key.kind, "tools": {}})
            row["tools"][tool] = defaults.get(key.name, "`null`")
            if key.doc != row["doc"]:  # a key whose meaning differs by tool (ckpt_path)
                row.setdefault("docs", {})[tool] = key.doc
    lines = [INTRO, "| key | default | tools | values | meaning |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        tools = row["tools"]
        first = next(iter(tools.values()))
        default = first + "".join(f"; {t}: {d}" for t, d in list(tools.items())[1:] if d != first)
        meaning = row["doc"] + "".join(f"; in {t}: {d}" for t, d in row.get("docs", {}).items())
        lines.append(f"| `{name}` | {default} | {', '.join(tools)} | {row['kind']} | {meaning} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args()
    text = reference()
    if args.check:
        if DOC.read_text() != text:
            print(f"{DOC} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
