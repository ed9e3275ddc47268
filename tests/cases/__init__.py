"""The registry of layer and loss cases the parity suite runs on every device.

Each module ``tests/cases/*.py`` defines ``LAYER_CASES`` and/or ``LOSS_CASES`` lists; this
package collects them all, so adding a layer means adding a module (or entries) here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LayerCase:
    """One layer configuration: how to build it, a sample input, and a NumPy float64 reference.

    make: returns the layer, identical on every call (seed its init).
    x: the sample input (host float64). reference(params, x, **kwargs) -> expected output.
    inputs: names of ``call_kwargs`` that are differentiable inputs too (cross-attention's key and
    value, a decoder's memory): backprop returns ``(dx, d_<name>, ...)`` and each δ is checked.
    bad_inputs: (description, host array or callable(device) -> input, error type, message regex
    [, call kwargs]); without call kwargs the case's own are used (host arrays are sent as float32).
    """

    name: str
    make: Callable[[], Any]
    x: np.ndarray
    reference: Callable[..., np.ndarray] | None = None
    train: bool = False
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    before_forward: Callable[[Any], None] | None = None
    check_input_gradient: bool = True
    #: False only where finite differences are undefined at the sample (say why in the case).
    check_gradients: bool = True
    parity: bool = True
    noncontiguous: bool = True
    max_full: int = 256
    inputs: tuple[str, ...] = ()  # call_kwargs that are differentiable inputs: backprop returns their δs after dx
    bad_inputs: list[tuple] = field(default_factory=list)


@dataclass
class LossCase:
    name: str
    make: Callable[[], Any]
    output: np.ndarray
    target: np.ndarray
    reference: Callable[[np.ndarray, np.ndarray], float] | None = None
    bad_inputs: list[tuple[str, Any, Any, type, str]] = field(default_factory=list)


def _collect(attribute: str) -> list:
    found = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        found += getattr(importlib.import_module(f"{__name__}.{module.name}"), attribute, [])
    return found


def layer_cases() -> list[LayerCase]:
    return _collect("LAYER_CASES")


def loss_cases() -> list[LossCase]:
    return _collect("LOSS_CASES")
