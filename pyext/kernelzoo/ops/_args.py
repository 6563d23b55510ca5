"""Checks of the plain (non-tensor) arguments shared by the ops' Python wrappers.

The wrappers check what the dispatcher cannot carry or would report badly (a
bool where torch wants an int, an int beyond int64, a size of the wrong length)
before calling the op, and raise the exception type the peer library raises for
the same call, with a message a user can act on. They run in eager mode, under
torch.compile and torch.export; TorchScript skips them (it checks argument
types itself).
"""

import operator

import torch


def is_integer(value, allow_bool: bool = False) -> bool:
    """Whether the dispatcher takes ``value`` for an ``int`` argument: a Python
    int, a SymInt, a NumPy integer or a one-element integer tensor. torch's own
    functions refuse ``bool`` for an int argument; torchvision takes it for
    output sizes (``allow_bool``)."""
    if isinstance(value, bool):
        return allow_bool
    if isinstance(value, (int, torch.SymInt)):
        return True
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def int_value(value):
    """``value`` (for which :func:`is_integer` holds) as an int or SymInt."""
    if isinstance(value, (int, torch.SymInt)):
        return value
    return operator.index(value)


def type_name(value) -> str:
    return type(value).__name__
