"""``--help`` of the Hydra entry points, generated from the config schema: the tool's description, the
downsampling strategies, the config groups and their options, then every key the tool takes with the value it
would run with here (composed with the command line's other overrides, ``${if_gpu:...}`` resolved for this
machine) and what it does (:mod:`downsample_lab.config.keys`). Torch-free: it answers in about half a second.
``--hydra-help`` still shows Hydra's own options.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

from omegaconf import OmegaConf

from downsample_lab.config import config_dir
from downsample_lab.config.keys import groups, options, schema_keys
from downsample_lab.device import cuda_available
from downsample_lab.models.names import STRATEGIES
from downsample_lab.study import ARM_KEY


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def key_values(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """Each key of the config ``config_name`` composed with ``overrides``, resolved for this machine, as the
    run would get it (a key the composed config lacks, such as ``model.batch_norm`` of the CNN, is null)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from downsample_lab.run import resolvers
    from downsample_lab.study import flatten

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def render_help(config_name: str, schema: type, overrides: list[str], width: int | None = None) -> str:
    """The text of ``python -m downsample_lab.<config_name> --help [overrides]``."""
    width = width or min(120, max(80, shutil.get_terminal_size((120, 24)).columns))
    texts = OmegaConf.load(config_dir() / "hydra" / "help" / f"{config_name}.yaml")
    lines = [str(texts.header).replace("$$", "$"), ""]
    keys = schema_keys(schema)
    if any(k.name in (ARM_KEY, "bench.strategies") for k in keys):
        where = "bench.strategies=[<name>,...]" if config_name == "bench" else f"{ARM_KEY}=<name>"
        lines += [f"== Downsampling strategies: {where} (model=cnn and model=fast) =="]
        lines += [f"{name:<9} {text}" for name, text in STRATEGIES.items()] + [""]
    lines += ["== Config groups: group=option =="]
    lines += [f"{g}: {', '.join(options(g))}" for g in groups(config_name)] + [""]
    device = "a CUDA GPU" if cuda_available() else "no CUDA GPU"
    lines += [
        f"== Config keys: key=value (the values this command runs with here; this machine has {device}) =="
    ]
    values = key_values(config_name, overrides)
    for key in keys:
        value = values.get(key.name)
        shown = "(required)" if value == "???" else _shown(value)
        lines.append(f"{key.name} = {shown}    [{key.kind}]")
        doc = key.doc.replace("`", "")
        lines += textwrap.wrap(doc, width - 4, initial_indent="    ", subsequent_indent="    ")
    lines += ["", str(texts.footer).replace("$$", "$")]
    return "\n".join(lines)
