"""Every registered layer and loss, on every device: forward vs NumPy float64 reference,
δ-backward vs finite differences (float64), float32 parity with NumPy, non-contiguous inputs,
inputs left unmodified, and bad inputs raising a clear error before any state changes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gradflow import backend
from gradflow.testing import check_layer, check_loss
from tests.cases import layer_cases, loss_cases
from tests.cases.devices import DIRECTIONAL_MAX_FULL, entry_by_entry

LAYERS = layer_cases()
LOSSES = loss_cases()


@pytest.mark.parametrize("case", LAYERS, ids=[c.name for c in LAYERS])
def test_layer_matches_reference_finite_differences_and_numpy_on_every_device(case, device):
    report = check_layer(
        case.make, case.x, reference=case.reference, devices=[device], train=case.train,
        call_kwargs=case.call_kwargs, before_forward=case.before_forward,
        check_input_gradient=case.check_input_gradient, check_gradients=case.check_gradients, parity=case.parity,
        noncontiguous=case.noncontiguous, max_full=case.max_full if entry_by_entry(device) else DIRECTIONAL_MAX_FULL,
        inputs=case.inputs,
    )
    checks = report.checked[device.name]
    assert "inputs unmodified" in checks and ("gradients" in checks or not case.check_gradients)
    if case.reference is not None:
        assert "forward" in checks


BAD = [(case, bad) for case in LAYERS for bad in case.bad_inputs]


@pytest.mark.parametrize("case,bad", BAD, ids=[f"{c.name}-{b[0]}" for c, b in BAD])
def test_layer_rejects_bad_input_before_changing_state(case, bad, device):
    description, value, error, pattern, *extra = bad
    layer = case.make().to(device)
    before = {k: backend.to_numpy(v).copy() for k, v in layer.state_dict().items()}

    def send(item):
        if callable(item):
            return item(device)
        if isinstance(item, np.ndarray):
            return device.send(item, "float32" if item.dtype == np.float64 else None)
        if isinstance(item, tuple):
            return tuple(send(part) for part in item)
        return item

    value = send(value)
    kwargs = {key: send(item) for key, item in (extra[0] if extra else case.call_kwargs).items()}
    with pytest.raises(error, match=pattern):
        layer(value, train=True, **kwargs)
    after = {k: backend.to_numpy(v) for k, v in layer.state_dict().items()}
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_layer_rejects_input_on_another_device(device):
    from gradflow.layers import Linear

    other = "cpu" if device.name != "cpu" else "strict"
    try:
        other_device = backend.device(other)
    except Exception as error:
        pytest.skip(f"no second device: {error}")
    layer = Linear(4, 3, rng=0).to(device)
    x = other_device.send(np.ones((2, 4)), "float32")
    with pytest.raises(backend.DeviceError, match=rf"Linear.*expected input on device {re.escape(device.name)}"):
        layer(x)


@pytest.mark.parametrize("case", LOSSES, ids=[c.name for c in LOSSES])
def test_loss_matches_reference_and_finite_differences_on_every_device(case, device):
    report = check_loss(case.make, case.output, case.target, reference=case.reference, devices=[device])
    assert report.checked[device.name][:2] == ["value", "gradients"]
