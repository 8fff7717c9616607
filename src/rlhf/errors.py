"""Errors a user can fix, and the guard that stops training on NaN/inf.

A `UserError` is a mistake in input (a path, a config key, a data row): the CLI prints its message on one
line to stderr and exits non-zero, with no traceback unless `--debug` is given. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import math


class UserError(Exception):
    """A mistake the user can fix; its message names the file, field or value at fault."""

    exit_code = 2


class ConfigError(UserError):
    """An unknown configuration key, a value of the wrong type, or a value out of range."""


class NonFiniteError(UserError):
    """A loss, reward or gradient became NaN or infinite; training stops before saving anything."""

    exit_code = 3


def check_finite(value: float, what: str, step: int | None = None) -> float:
    """Return `value` if finite, else raise `NonFiniteError` naming `what` (and the step)."""
    value = float(value)
    if not math.isfinite(value):
        where = f" at step {step}" if step is not None else ""
        raise NonFiniteError(
            f"{what} is {value}{where}; training stopped and nothing was saved from this step "
            "(try a lower learning rate or check the data)"
        )
    return value
