"""The one exception type for mistakes a user can fix (bad override, missing data, corrupt file).

Entry points turn a :class:`UserError` into one line on stderr and exit code 2; anything else is our bug and
keeps its traceback.
"""

import difflib
import sys
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix; the message is one sentence naming what to change."""


class ConfigError(UserError):
    """A config value is invalid."""


class DataError(UserError):
    """The data set is missing, incomplete or corrupt."""


def did_you_mean(word: str, candidates: list[str]) -> str:
    """``"; did you mean <the closest candidate>?"`` for a message, or ``""`` when none is close (case aside)."""
    lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[match[0]]}?" if match else ""


def exit_with_error(err: UserError) -> NoReturn:
    """One line on stderr, exit code 2: how a user's mistake ends a command."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def shown(value: object) -> str:
    """``value`` as a message quotes it: a choice by its name (``'conv'``), anything else by its repr."""
    from enum import Enum

    return repr(str(value) if isinstance(value, Enum) else value)


def check_value(ok: bool, key: str, value: object, valid: str) -> None:
    """A value rule: raise ConfigError ``<key>=<value> is not valid; <valid>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={shown(value)} is not valid; {valid}")
