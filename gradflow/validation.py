"""Constructor arguments checked by name, in one place, for every public constructor.

Every layer, loss, optimizer, schedule and callback constructor goes through
:func:`checked_arguments` (installed by the base classes' ``__init_subclass__``), so an argument
with one of the names in :data:`CHECKS` is checked the same way everywhere, including in layers
added later: ``eps=inf``, ``dropout=-0.1``, ``forget_bias=nan``, ``dtype="float8"``,
``bias="yes"`` raise a ``TypeError`` or ``ValueError`` that names the class, the argument, what
it accepts and what it got.

A constructor's own checks keep precedence (their messages are often more specific): the
shared check replaces the constructor's error only when that error does not name the argument
(``OverflowError: cannot convert float infinity to integer``), and runs after a constructor that
accepted the value, restoring the initializer's generator if it then refuses, so a refused
construction leaves no trace. Only arguments the caller passes are checked (defaults are
trusted); a class whose argument of a listed name means something else lists it in
``_unchecked_arguments``.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[str, str, Any], None]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real(owner: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds, or a clear error naming ``owner`` and ``name``."""
    expected = "a finite number"
    if low is not None or high is not None:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        expected = f"in {left}{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}{right}"
    if not _is_number(value):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__} {value!r} (expected {expected})")
    number = float(value)
    if not math.isfinite(number) or (low is not None and (number < low or (low_open and number == low))) or (
            high is not None and (number > high or (high_open and number == high))):
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return number


def integer(owner: str, name: str, value: Any, *, low: int | None = None) -> int:
    """``value`` as an int ≥ ``low`` (bools refused), or a clear error."""
    bound = "" if low is None else f" >= {low}"
    if not _is_int(value):
        raise TypeError(f"{owner}: {name} must be an int{bound}, got {value!r} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{owner}: {name} must be an int{bound}, got {value!r}")
    return int(value)


def flag(owner: str, name: str, value: Any) -> None:
    """Raise a TypeError naming ``owner`` and ``name`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r} ({type(value).__name__})")


def _positive(owner: str, name: str, value: Any) -> None:
    real(owner, name, value, low=0.0, low_open=True)


def _non_negative(owner: str, name: str, value: Any) -> None:
    real(owner, name, value, low=0.0)


def _finite(owner: str, name: str, value: Any) -> None:
    real(owner, name, value)


def _probability(owner: str, name: str, value: Any) -> None:
    real(owner, name, value, low=0.0, high=1.0, high_open=True)


def _size(owner: str, name: str, value: Any) -> None:
    integer(owner, name, value, low=1)


def _seed(owner: str, name: str, value: Any) -> None:
    if value is not None:
        integer(owner, name, value, low=0)


def _optional_int(owner: str, name: str, value: Any) -> None:
    if value is not None and not _is_int(value):
        raise TypeError(f"{owner}: {name} must be an int or None, got {value!r} ({type(value).__name__})")


def _dtype(owner: str, name: str, value: Any) -> None:
    from . import backend

    if value is None or (isinstance(value, str) and value in backend.DTYPES):
        return
    try:  # a NumPy dtype or scalar type of an allowed name (np.float64) is fine too
        import numpy as np

        accepted = not isinstance(value, (str, bool, numbers.Number)) and np.dtype(value).name in backend.DTYPES
    except (TypeError, ValueError):
        accepted = False
    if not accepted:
        raise ValueError(f"{owner}: {name} must be one of {backend.DTYPES}, got {value!r}")


def _init(owner: str, name: str, value: Any) -> None:
    from .init import _BY_NAME

    if callable(value):
        return
    if not isinstance(value, str) or value not in _BY_NAME:
        raise ValueError(f"{owner}: {name} must be a callable or one of {sorted(_BY_NAME)}, got {value!r}")


def _learning_rate(owner: str, name: str, value: Any) -> None:
    if not callable(value):  # a schedule is checked where it is defined
        real(owner, name, value, low=0.0)


def _optional_finite(owner: str, name: str, value: Any) -> None:
    if value is not None:
        real(owner, name, value)


def _shape(owner: str, name: str, value: Any) -> None:
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(_is_int(item) and item >= 1 for item in items):
        raise TypeError(f"{owner}: {name} must be a positive int or a tuple of them, got {value!r}")


def _name(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{owner}: {name} must be a non-empty string, got {value!r} ({type(value).__name__})")


def _path(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise TypeError(f"{owner}: {name} must be a file path (str or os.PathLike), got {value!r} "
                        f"({type(value).__name__})")


#: Argument name -> check, for names that mean the same thing in every constructor.
CHECKS: dict[str, Check] = {
    # sizes
    **{name: _size for name in ("in_features", "out_features", "num_features", "embed_dim", "num_heads",
                                "hidden_size", "input_size", "num_layers", "num_embeddings", "max_len",
                                "in_channels", "out_channels", "num_groups", "num_channels", "growth_interval")},
    # finite reals
    "eps": _positive, "mlp_ratio": _positive, "delta": _positive, "initial": _positive, "minimum": _positive,
    "base": _positive, "std": _non_negative, "min_delta": _finite,
    "forget_bias": _finite, "alpha": _finite, "negative_slope": _finite, "backoff_factor": _finite,
    "growth_factor": _positive, "div_factor": _positive, "final_div_factor": _positive,
    "lr": _learning_rate, "max_lr": _learning_rate, "min_lr": _learning_rate, "after": _learning_rate,
    "baseline": _optional_finite, "normalized_shape": _shape,
    "dropout": _probability, "attention_dropout": _probability, "label_smoothing": _probability,
    # flags
    **{name: flag for name in ("bias", "affine", "causal", "bidirectional", "batch_first", "return_sequences",
                                "count_include_pad", "validate", "amsgrad", "centered", "nesterov", "shuffle",
                                "drop_last", "append", "save_best_only", "restore_best_weights",
                                "elementwise_affine")},
    # the rest
    "seed": _seed, "dtype": _dtype, "init": _init, "ignore_index": _optional_int,
    "monitor": _name, "path": _path,
}


def checked_arguments(cls: type) -> type:
    """Wrap ``cls.__init__`` (if the class defines one) so that the arguments named in
    :data:`CHECKS` are checked first. Used as ``__init_subclass__`` hook and as a decorator."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_checked_arguments", False):
        return cls
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return cls
    skip = set(getattr(cls, "_unchecked_arguments", ()))
    checks = [(name, CHECKS[name], parameter.default) for name, parameter in signature.parameters.items()
              if name in CHECKS and name not in skip]
    if not checks:
        return cls

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        from . import init as _init_module

        try:
            given = signature.bind(self, *args, **kwargs).arguments
        except TypeError:  # a wrong call: the constructor's own TypeError says so
            return init(self, *args, **kwargs)
        to_check = [(name, check, given[name]) for name, check, default in checks
                    if name in given and given[name] is not default and not (given[name] is None and default is None)]
        if not to_check:
            return init(self, *args, **kwargs)
        generator = _init_module._default_generator
        saved = generator.bit_generator.state
        owner = type(self).__name__
        try:
            init(self, *args, **kwargs)
        except Exception as error:
            message = str(error)
            for name, check, value in to_check:
                if not re.search(rf"\b{name}\b", message):  # the constructor's error does not name it: ours does
                    try:
                        check(owner, name, value)
                    except (TypeError, ValueError) as ours:
                        raise ours from None
            raise
        for name, check, value in to_check:
            try:
                check(owner, name, value)
            except (TypeError, ValueError):
                generator.bit_generator.state = saved  # the refused construction draws nothing
                _init_module._default_generator = generator
                raise

    __init__._checked_arguments = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


class CheckedArguments:
    """Base for classes whose subclasses' constructor arguments are checked by name."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        checked_arguments(cls)


def state_mismatches(expected: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` keys of a state ``given`` for a model whose arrays
    are ``expected`` (both map names to arrays, or to anything with a ``shape``); each mis-shaped
    entry reads ``"key: model (...) vs given (...)"``."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    wrong = [f"{key}: model {tuple(expected[key].shape)} vs given {tuple(given[key].shape)}"
             for key in expected if key in given and tuple(expected[key].shape) != tuple(given[key].shape)]
    return missing, unexpected, wrong


def state_mismatch_message(title: str, missing: list[str], unexpected: list[str], wrong: list[str], *,
                           strict: bool = True) -> str | None:
    """The one message for a state that does not fit a model, or None when it fits.

    title: what refuses and why (first line). Missing and unexpected keys count only when
    ``strict``; mis-shaped entries always do. The lines read ``missing keys: [...]``,
    ``unexpected keys: [...]`` and ``shape mismatches: a; b``, the ones that apply, in that order.
    """
    if not wrong and not (strict and (missing or unexpected)):
        return None
    lines = [title]
    if missing:
        lines.append(f"missing keys: {missing}")
    if unexpected:
        lines.append(f"unexpected keys: {unexpected}")
    if wrong:
        lines.append("shape mismatches: " + "; ".join(wrong))
    return "\n  ".join(lines)


__all__ = ["CHECKS", "CheckedArguments", "checked_arguments", "flag", "integer", "real", "state_mismatch_message",
           "state_mismatches"]
