"""The type of a config key whose value is one of a fixed set of names (``model.downsample``, ``optim.schedule``).

Torch-free, like every config schema module, so that ``--help`` and a typo answer before torch is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """The type of a key whose value is one of a fixed set of names; a config holds the member, which compares
    equal to its name and prints as it (``cfg.model.downsample == "conv"``, ``f"{...}"``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def choices(name: str, values: Iterable[str], module: str) -> Any:
    """A :class:`Choice` type named ``name`` whose members are ``values`` (defined in ``module``, for pickling)."""
    return Choice(name, [(v, v) for v in values], module=module, qualname=name)
