"""Argument checks shared by the modules that take counts and numbers from
users and from configuration files: one message for each kind of mistake."""
import operator

import numpy as np

__all__ = ["integer", "is_real"]


def integer(name, value, what=None):
    """``value`` as an int; ValueError naming ``name`` (and ``what``, e.g. the
    attack) for 2.5, "3" or True (counts of rows or workers: True would
    silently count as one)."""
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    prefix = f"{what}: " if what else ""
    raise ValueError(f"{prefix}{name} must be an integer, got {name}={value!r}")


def is_real(value):
    """Whether ``value`` is a real number (not a bool, None or a string)."""
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))
