"""Learning-rate schedules: their formulas, composition, state, and use by every optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow import optim
from gradflow.optim import CosineAnnealing, ExponentialLR, LinearWarmup, OneCycle, ReduceLROnPlateau, StepLR


def test_step_and_exponential_schedules_follow_their_formulas():
    step = StepLR(0.1, step_size=3, gamma=0.5)
    assert [step(t) for t in range(7)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    exponential = ExponentialLR(0.2, gamma=0.9)
    assert exponential(5) == pytest.approx(0.2 * 0.9**5)


def test_cosine_annealing_goes_from_lr_to_min_lr_and_stays():
    schedule = CosineAnnealing(1.0, total_steps=10, min_lr=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(5) == pytest.approx(0.55)
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(50) == pytest.approx(0.1)
    values = [schedule(t) for t in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_warmup_ramps_then_hands_the_shifted_step_to_the_wrapped_schedule():
    inner = CosineAnnealing(1.0, total_steps=10)
    schedule = LinearWarmup(inner, warmup_steps=4)
    assert [schedule(t) for t in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert schedule(4) == pytest.approx(inner(0))
    assert schedule(9) == pytest.approx(inner(5))
    constant = LinearWarmup(0.01, warmup_steps=2, start_factor=0.5)
    assert [constant(t) for t in range(4)] == pytest.approx([0.005, 0.0075, 0.01, 0.01])


def test_one_cycle_rises_to_max_lr_then_anneals_to_the_final_lr():
    schedule = OneCycle(1.0, total_steps=100, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    # PyTorch's layout: the peak at step pct_start * total_steps - 1, the final lr at total_steps - 1
    assert schedule(0) == pytest.approx(1.0 / 25)
    assert schedule(29) == pytest.approx(1.0)
    assert schedule(99) == pytest.approx(1.0 / 25 / 1e4) and schedule(100) == schedule(99)
    assert max(schedule(t) for t in range(101)) == pytest.approx(1.0)
    assert schedule(14) == pytest.approx(1.0 / 25 + (1.0 - 1.0 / 25) * 0.5 * (1 - np.cos(np.pi * 14 / 29)))


def test_reduce_on_plateau_waits_patience_epochs_then_cools_down_and_respects_min_lr():
    schedule = ReduceLROnPlateau(1.0, factor=0.5, patience=2, cooldown=1, min_lr=0.2, min_delta=0.0)
    lrs = []
    for value in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]:
        schedule.observe(value)
        lrs.append(schedule(0))
    # improvement at 0.9; two flat epochs -> halve; one cooldown epoch ignored; two more -> halve;
    # min_lr 0.2 caps the third reduction at 0.2 and then no further reductions happen.
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2])
    assert schedule.reductions == 3


def test_reduce_on_plateau_in_max_mode_and_its_state_round_trip():
    schedule = ReduceLROnPlateau(0.1, monitor="val_accuracy", patience=1, factor=0.1)
    assert schedule.mode == "max"
    schedule.observe(0.5)
    schedule.observe(0.4)
    assert schedule(0) == pytest.approx(0.01)
    clone = ReduceLROnPlateau(0.1, monitor="val_accuracy", patience=1, factor=0.1)
    clone.load_state_dict(schedule.state_dict())
    assert clone(0) == schedule(0) and clone.state_dict() == schedule.state_dict()


def test_warmup_passes_observe_and_state_through_to_reduce_on_plateau():
    inner = ReduceLROnPlateau(1.0, patience=0, factor=0.5)
    schedule = LinearWarmup(inner, warmup_steps=2)
    assert schedule.monitor == "val_loss"
    schedule.observe(1.0)
    schedule.observe(2.0)
    assert schedule(5) == pytest.approx(0.5)
    assert schedule.state_dict() == {"after": inner.state_dict()}


@pytest.mark.parametrize("make", [
    lambda: StepLR(0.0, 2), lambda: StepLR(0.1, 0), lambda: ExponentialLR(0.1, 1.5),
    lambda: CosineAnnealing(0.1, 10, min_lr=0.2), lambda: LinearWarmup(0.1, warmup_steps=0),
    lambda: OneCycle(1.0, 10, pct_start=1.0), lambda: ReduceLROnPlateau(0.1, mode="up"),
])
def test_schedules_reject_bad_arguments(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_schedules_reject_negative_steps():
    with pytest.raises(ValueError, match="non-negative int"):
        StepLR(0.1, 2)(-1)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_every_optimizer_uses_the_schedule_exactly_like_setting_lr_by_hand(name):
    x = gf.device("cpu").send(np.random.default_rng(0).normal(size=(5, 3)), "float32")
    schedule = LinearWarmup(StepLR(0.1, step_size=1, gamma=0.5), warmup_steps=2)
    scheduled, by_hand = gf.Sequential(L.Linear(3, 2, rng=0)), gf.Sequential(L.Linear(3, 2, rng=0))
    scheduled_opt = getattr(optim, name)(scheduled, lr=schedule)
    by_hand_opt = getattr(optim, name)(by_hand, lr=1.0)
    for step in range(5):
        assert scheduled_opt.lr == pytest.approx(schedule(step))
        by_hand_opt.lr = schedule(step) if schedule(step) > 0 else 1e-30
        for model, opt in ((scheduled, scheduled_opt), (by_hand, by_hand_opt)):
            y, backprop = model(x, train=True)
            opt.zero_grad()
            backprop(y)
            opt.step()
    np.testing.assert_allclose(gf.to_numpy(scheduled[0].weight.value), gf.to_numpy(by_hand[0].weight.value),
                               rtol=1e-6, atol=1e-7)
    assert scheduled_opt.step_count == 5


def test_fit_feeds_the_monitored_metric_to_reduce_on_plateau():
    from gradflow.losses import MSE
    from gradflow.train import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = rng.normal(size=(32, 1)).astype(np.float32)  # noise: the validation loss will plateau
    model = gf.Sequential(L.Linear(3, 1, rng=0))
    schedule = ReduceLROnPlateau(0.05, monitor="val_loss", patience=1, factor=0.5, min_delta=10.0)
    history = fit(model, MSE(), optim.SGD(model, lr=schedule), (x, y), epochs=4, validation=(x, y), verbose=0)
    # min_delta=10 makes every epoch after the first a non-improvement: halve at every epoch end
    assert history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    with pytest.raises(ValueError, match="monitors 'val_loss', which needs validation data"):  # before training
        fit(model, MSE(), optim.SGD(model, lr=ReduceLROnPlateau(0.05)), (x, y), epochs=1, verbose=0)
    assert math.isfinite(history["loss"][-1])
