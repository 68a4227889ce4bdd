"""What each config key does, read from the schema itself: the docstring under each field of the schema
dataclasses is the one description of a key, from which ``--help`` (:mod:`downsample_lab.run.help`) and
docs/configuration.md (``scripts/config_reference.py``) are generated, so neither can drift from the code.
Also the config groups a root config selects and their options, as the files under ``configs/`` have them.
Torch-free.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from downsample_lab.choice import Choice
from downsample_lab.config.schema import config_dir


@dataclass(frozen=True)
class Key:
    """A key a user can set: its dotted name, what values it takes and what it does."""

    name: str
    kind: str  # "int", "one of maxpool, conv, ...", "list of int", ...
    doc: str


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls`` (and of its dataclass bases), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for field, after in itertools.pairwise(body):
            is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and is_doc:
                docs[field.target.id] = " ".join(str(after.value.value).split())
    return docs


def kind_of(hint: Any) -> str:
    """What values a type hint of the schema takes, in words."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        hint
    )
    if nullable and len(args) == 1:
        return f"{kind_of(args[0])} or null"
    if isinstance(hint, type) and issubclass(hint, Choice):
        return "one of " + ", ".join(hint.__members__)
    if typing.get_origin(hint) is list:
        return f"list of {kind_of(args[0])}"
    if hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint))


def schema_keys(schema: type, prefix: str = "") -> list[Key]:
    """Every leaf key of ``schema`` with its kind and description, in the schema's order; a field without a
    docstring is our bug (a test checks that there is none)."""
    keys: list[Key] = []
    docs = field_docs(schema)
    for name, hint in typing.get_type_hints(schema).items():
        if dataclasses.is_dataclass(hint):
            keys += schema_keys(hint, f"{prefix}{name}.")
        else:
            keys.append(Key(f"{prefix}{name}", kind_of(hint), docs.get(name, "")))
    return keys


def groups(config_name: str) -> list[str]:
    """The config groups that ``config_name``'s defaults list selects (model, data, ...), Hydra's own left out."""
    root = OmegaConf.load(config_dir() / f"{config_name}.yaml")
    found = []
    for entry in root.get("defaults", []):
        if isinstance(entry, DictConfig):
            for key in entry:
                name = str(key).removeprefix("override ").strip()
                if not name.startswith("hydra") and name not in found:
                    found.append(name)
    return sorted(found)


def options(group: str) -> list[str]:
    """The configs of ``group`` (``configs/<group>/*.yaml``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
