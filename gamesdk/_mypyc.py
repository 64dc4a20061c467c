"""What the SDK's source does for the optional compiled build (mypyc, ``GAMESDK_MYPYC=1``, setup.py)."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["python_class"]

T = TypeVar("T")


def python_class(cls: type[T]) -> type[T]:
    """Keep ``cls`` an ordinary Python class in a compiled module (it changes nothing else).

    mypyc makes a class native unless a decorator other than ``dataclass``, ``final`` or its own attributes is on it;
    this one is such a decorator. (``mypy_extensions.mypyc_attr(native_class=False)`` says the same, but the module
    would then need mypy_extensions at run time.) For the SDK's validated values: a native class checks each field's
    type as the field is set and raises ``TypeError`` before ``__post_init__`` can name the fault with
    :class:`~gamesdk.errors.LocalProtocolError`, as the pure package does; as a Python class it stays that error.
    """
    return cls
