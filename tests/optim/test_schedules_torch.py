"""Learning-rate schedules against torch.optim.lr_scheduler, step for step; the documented
differences (CosineAnnealing after total_steps, ReduceLROnPlateau's patience) tested as such;
the new schedules with fit and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import (SGD, CosineAnnealing, CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR, LinearWarmup,
                            MultiStepLR, OneCycle, PolynomialLR, ReduceLROnPlateau, SequentialLR, StepLR)
from gradflow.train import fit

torch = pytest.importorskip("torch")
LR = 0.5


def torch_lrs(make, steps):
    """The lr of each of ``steps`` optimizer steps under a torch scheduler stepped after each."""
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=LR)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


S = torch.optim.lr_scheduler if torch is not None else None
CASES = {
    "multistep": (lambda: MultiStepLR(LR, [3, 7, 8], gamma=0.5), lambda o: S.MultiStepLR(o, [3, 7, 8], gamma=0.5), 12),
    "polynomial": (lambda: PolynomialLR(LR, 10, power=2.0), lambda o: S.PolynomialLR(o, total_iters=10, power=2.0), 14),
    "polynomial_linear": (lambda: PolynomialLR(LR, 7), lambda o: S.PolynomialLR(o, total_iters=7), 9),
    "warm_restarts": (lambda: CosineAnnealingWarmRestarts(LR, 4, min_lr=0.01),
                      lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4, eta_min=0.01), 13),
    "warm_restarts_mult": (lambda: CosineAnnealingWarmRestarts(LR, 3, cycle_mult=2, min_lr=0.0),
                           lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2), 30),
    "cyclic_triangular": (lambda: CyclicLR(0.1, LR, 3, 5),
                          lambda o: S.CyclicLR(o, 0.1, LR, 3, 5, cycle_momentum=False), 25),
    "cyclic_triangular2": (lambda: CyclicLR(0.1, LR, 2, mode="triangular2"),
                           lambda o: S.CyclicLR(o, 0.1, LR, 2, mode="triangular2", cycle_momentum=False), 20),
    "cyclic_exp_range": (lambda: CyclicLR(0.1, LR, 3, mode="exp_range", gamma=0.9),
                         lambda o: S.CyclicLR(o, 0.1, LR, 3, mode="exp_range", gamma=0.9, cycle_momentum=False), 20),
    "one_cycle": (lambda: OneCycle(LR, 20), lambda o: S.OneCycleLR(o, LR, total_steps=20, cycle_momentum=False), 20),
    "one_cycle_linear": (lambda: OneCycle(LR, 17, pct_start=0.4, anneal_strategy="linear"),
                         lambda o: S.OneCycleLR(o, LR, total_steps=17, pct_start=0.4, anneal_strategy="linear",
                                                cycle_momentum=False), 17),
    "one_cycle_three_phase": (lambda: OneCycle(LR, 30, pct_start=0.25, three_phase=True, div_factor=10),
                              lambda o: S.OneCycleLR(o, LR, total_steps=30, pct_start=0.25, three_phase=True,
                                                     div_factor=10, cycle_momentum=False), 30),
    "step": (lambda: StepLR(LR, 3, gamma=0.5), lambda o: S.StepLR(o, 3, gamma=0.5), 10),
    "exponential": (lambda: ExponentialLR(LR, 0.9), lambda o: S.ExponentialLR(o, 0.9), 10),
    "cosine_within_total_steps": (lambda: CosineAnnealing(LR, 10, min_lr=0.05),
                                  lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.05), 11),
    "sequential": (lambda: SequentialLR([LinearWarmup(LR, 3, start_factor=0.25), ExponentialLR(LR, 0.8)], [3]),
                   lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.25, total_iters=3),
                                                S.ExponentialLR(o, 0.8)], milestones=[3]), 10),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedule_gives_torch_lr_scheduler_sequence(case):
    ours, theirs, steps = CASES[case]
    schedule = ours()
    np.testing.assert_allclose([schedule(t) for t in range(steps)], torch_lrs(theirs, steps), rtol=1e-12, atol=1e-15)


def test_cosine_annealing_stays_at_min_lr_after_total_steps_where_torch_rises_again():
    ours = CosineAnnealing(LR, 10, min_lr=0.05)
    theirs = torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.05), 15)
    assert [ours(t) for t in range(11, 15)] == [0.05] * 4
    assert all(lr > 0.05 for lr in theirs[11:15])  # the documented difference


def _plateau_lrs_torch(values, **kwargs):
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=LR)
    scheduler = S.ReduceLROnPlateau(optimizer, **kwargs)
    lrs = []
    for value in values:
        scheduler.step(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


PLATEAU_VALUES = [1.0, 0.9, 0.95, 0.9, 0.9, 0.91, 0.8, 0.8, 0.80001, 0.85, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]


@pytest.mark.parametrize("patience,cooldown,mode", [(0, 0, "min"), (1, 0, "min"), (2, 1, "min"), (1, 2, "max")])
def test_reduce_on_plateau_with_patience_plus_one_and_rel_threshold_is_torchs_sequence(patience, cooldown, mode):
    values = PLATEAU_VALUES if mode == "min" else [-v for v in PLATEAU_VALUES]
    ours = ReduceLROnPlateau(LR, monitor="loss", factor=0.5, patience=patience + 1, cooldown=cooldown, mode=mode,
                             min_delta=1e-4, threshold_mode="rel", min_lr=0.01)
    got = []
    for value in values:
        ours.observe(value)
        got.append(ours(0))
    expected = _plateau_lrs_torch(values, factor=0.5, patience=patience, cooldown=cooldown, mode=mode,
                                  threshold=1e-4, threshold_mode="rel", min_lr=0.01)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reduce_on_plateau_abs_threshold_matches_torch_abs():
    ours = ReduceLROnPlateau(LR, monitor="loss", factor=0.5, patience=2, min_delta=0.02)
    got = []
    for value in PLATEAU_VALUES:
        ours.observe(value)
        got.append(ours(0))
    expected = _plateau_lrs_torch(PLATEAU_VALUES, factor=0.5, patience=1, threshold=0.02, threshold_mode="abs")
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("make,pattern", [
    (lambda: MultiStepLR(0.1, [5, 3]), r"MultiStepLR: milestones must be strictly increasing"),
    (lambda: MultiStepLR(0.1, []), r"MultiStepLR: milestones must be a non-empty list"),
    (lambda: PolynomialLR(0.1, 0), r"PolynomialLR: total_steps must be > 0"),
    (lambda: CosineAnnealingWarmRestarts(0.1, 5, cycle_mult=0), r"CosineAnnealingWarmRestarts: cycle_mult must be > 0"),
    (lambda: CosineAnnealingWarmRestarts(0.1, 5, min_lr=0.2), r"min_lr \(0.2\) must not exceed lr"),
    (lambda: CyclicLR(0.1, 0.5, 3, mode="sine"), r"CyclicLR: mode must be"),
    (lambda: OneCycle(0.1, 10, anneal_strategy="cosine"), r"OneCycle: anneal_strategy must be 'cos' or 'linear'"),
    (lambda: SequentialLR([StepLR(0.1, 2)], []), r"SequentialLR: schedules must be a list of at least two"),
    (lambda: SequentialLR([StepLR(0.1, 2), StepLR(0.1, 2)], [3, 4]), r"SequentialLR: milestones must be a list of 1 steps"),
    (lambda: ReduceLROnPlateau(0.1, threshold_mode="relative"), r"threshold_mode must be 'abs' or 'rel'"),
])
def test_new_schedules_reject_bad_arguments(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


def test_sequential_schedule_with_reduce_on_plateau_works_in_fit_and_resumes_from_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def run(epochs, load=None, save=None):
        model = gf.Sequential(L.Linear(4, 8, rng=0), L.ReLU(), L.Linear(8, 2, rng=1))
        plateau = ReduceLROnPlateau(0.05, monitor="loss", factor=0.5, patience=0)
        schedule = SequentialLR([CyclicLR(0.01, 0.05, 2), plateau], milestones=[4])
        optimizer = SGD(model, lr=schedule, momentum=0.9)
        if load is not None:
            gf.load(load, model, optimizer)
        fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), epochs, batch_size=16, shuffle=False, verbose=0)
        if save is not None:
            gf.save(save, model, optimizer)
        return model, optimizer, plateau

    whole, whole_opt, whole_plateau = run(6)
    run(3, save=tmp_path / "half.safetensors")
    resumed, resumed_opt, resumed_plateau = run(3, load=tmp_path / "half.safetensors")
    assert whole_plateau.state_dict() == resumed_plateau.state_dict()
    assert whole_opt.step_count == resumed_opt.step_count == 24
    for a, b in zip(whole.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.value, b.value)


@pytest.mark.parametrize("make", [lambda: LinearWarmup(CosineAnnealing(0.05, 16), 4),
                                  lambda: SequentialLR([CyclicLR(0.01, 0.05, 2), MultiStepLR(0.05, [2])], [4])],
                         ids=["warmup", "sequential"])
def test_composite_schedules_without_a_monitored_metric_train_without_validation_data(make):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = gf.Sequential(L.Linear(4, 2, rng=0))
    history = fit(model, SoftmaxCrossEntropy(), SGD(model, lr=make()), (x, y), 3, batch_size=8, verbose=0)
    assert history.epochs == [1, 2, 3] and len(history["lr"]) == 3
