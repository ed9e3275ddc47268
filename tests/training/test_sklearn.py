"""The scikit-learn estimators pass scikit-learn's own estimator checks and behave in pipelines."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from gradflow.optim import OPTIMIZERS  # noqa: E402
from gradflow.sklearn import GradflowClassifier, GradflowRegressor  # noqa: E402

# Small settings keep the ~100 checks at a few seconds. Every check applies and passes, so
# expected_failed_checks is empty; a check that cannot apply would be listed here with why.
ESTIMATORS = [
    GradflowClassifier(hidden_layer_sizes=(16,), epochs=20, lr=1e-2, random_state=0),
    GradflowRegressor(hidden_layer_sizes=(16,), epochs=20, lr=1e-2, random_state=0),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda estimator: {})
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_classifier_learns_digits_and_gives_probabilities():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    classifier = make_pipeline(StandardScaler(), GradflowClassifier(hidden_layer_sizes=(32,), epochs=15, lr=3e-3,
                                                                    random_state=0))
    scores = cross_val_score(classifier, x, y, cv=2)
    assert scores.mean() > 0.85  # measured 0.90-0.92 over seeds 0-2
    fitted = classifier.fit(x[:300], y[:300])
    proba = fitted.predict_proba(x[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(fitted.predict(x[:5]), fitted.classes_[proba.argmax(axis=1)])


def test_regressor_fits_a_linear_map_and_handles_several_outputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = np.stack([x @ [1.0, -2.0, 0.5] + 100.0, x[:, 0] * 3.0], axis=1)
    regressor = GradflowRegressor(hidden_layer_sizes=(16,), epochs=30, lr=1e-2, random_state=0).fit(x, y)
    assert regressor.predict(x).shape == (200, 2)
    assert regressor.score(x, y) > 0.98
    assert len(regressor.loss_curve_) == regressor.n_iter_ == 30


def test_bad_parameters_are_reported_at_fit_time():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    for estimator, pattern in ((GradflowClassifier(activation="swish"), "activation"),
                               (GradflowClassifier(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
                               (GradflowClassifier(optimizer="lbfgs"), "optimizer"),
                               (GradflowClassifier(epochs=0), "epochs")):
        with pytest.raises(ValueError, match=pattern):
            estimator.fit(x, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        GradflowClassifier().fit(x, np.zeros(4))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_registry_optimizer_trains_the_estimators_one_epoch(name):
    x = np.random.default_rng(0).normal(size=(16, 3))
    y = (x[:, 0] > 0).astype(int)
    for estimator, target in ((GradflowClassifier, y), (GradflowRegressor, y.astype(float))):
        fitted = estimator(hidden_layer_sizes=(4,), epochs=1, batch_size=16, optimizer=name, random_state=0).fit(x, target)
        assert fitted.n_iter_ == 1 and np.isfinite(fitted.loss_curve_[0]) and fitted.predict(x).shape == (16,)


def test_the_estimators_offer_exactly_the_optimizer_registry():
    from gradflow import sklearn as gradflow_sklearn

    assert gradflow_sklearn.OPTIMIZERS == tuple(OPTIMIZERS)
    assert {"nadam", "radam", "adamax", "adadelta", "lion"} <= set(OPTIMIZERS)
