"""scikit-learn estimators backed by a gradflow MLP: GradflowClassifier and GradflowRegressor.

    from gradflow.sklearn import GradflowClassifier
    clf = GradflowClassifier(hidden_layer_sizes=(64,), epochs=30, random_state=0).fit(X, y)
    clf.predict_proba(X[:5]); clf.score(X, y)

They follow scikit-learn's conventions (parameters stored as given, validated in ``fit``;
learned attributes end in ``_``), so they work in pipelines, grid searches and
``cross_val_score``, and pass scikit-learn's estimator checks. ``device="cuda"`` trains on a GPU;
inputs and outputs stay NumPy. The regressor standardises its targets internally (and undoes it
in ``predict``). Needs scikit-learn: ``pip install 'gradflow-nn[data]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as error:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("gradflow.sklearn needs scikit-learn: pip install 'gradflow-nn[data]'") from error

from .optim.optimizers import OPTIMIZERS as _OPTIMIZER_CLASSES

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu")
OPTIMIZERS = tuple(_OPTIMIZER_CLASSES)  # every optimizer of gradflow.optim, by name


class _GradflowMLP(BaseEstimator):
    """Shared parameters and training; subclasses choose the loss and the output handling."""

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        epochs: int = 50,
        lr: float = 1e-3,
        batch_size: int = 32,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        device: str = "cpu",
        dtype: str = "float64",
        random_state: Any = None,
        verbose: int = 0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _check_parameters(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints, got {self.hidden_layer_sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return tuple(int(s) for s in sizes)

    def _build(self, n_in: int, n_out: int, seed: int) -> Any:
        from . import layers as L
        from .containers import Sequential

        activation = {"relu": L.ReLU, "tanh": L.Tanh, "sigmoid": L.Sigmoid, "gelu": L.GELU, "silu": L.SiLU}[self.activation]
        init = "he_normal" if self.activation in ("relu", "gelu", "silu") else "glorot_uniform"
        stack: list[Any] = []
        width = n_in
        for i, size in enumerate(self._check_parameters()):
            stack += [L.Linear(width, size, init=init, rng=seed + i), activation()]
            width = size
        stack.append(L.Linear(width, n_out, rng=seed + len(stack)))
        return Sequential(*stack).to(self.device, self.dtype)

    def _train(self, X: np.ndarray, y: np.ndarray, n_out: int, loss: Any) -> None:
        from . import optim
        from .train import fit

        self._check_parameters()
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        model = self._build(X.shape[1], n_out, seed)
        optimizer = optim.optimizer_class(self.optimizer)(model, lr=self.lr, weight_decay=self.weight_decay)
        history = fit(model, loss, optimizer, (X, y), epochs=int(self.epochs), batch_size=int(self.batch_size),
                      seed=seed, verbose=self.verbose)
        self.model_ = model
        self.loss_curve_ = list(history["loss"])
        self.n_iter_ = len(self.loss_curve_)

    def _outputs(self, X: Any) -> np.ndarray:
        from .train import predict

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(predict(self.model_, X), dtype=np.float64)


class GradflowClassifier(ClassifierMixin, _GradflowMLP):
    """An MLP classifier trained with softmax cross-entropy.

    Parameters: hidden_layer_sizes, activation ("relu", "tanh", "sigmoid", "gelu", "silu"),
    epochs, lr, batch_size, optimizer (a name in ``gradflow.optim.OPTIMIZERS``: "adam", "adamw",
    "sgd", "rmsprop", "adagrad", "nadam", "radam", "adamax", "adadelta", "lion"),
    weight_decay, device ("cpu", "cuda", "cuda:N", "auto"), dtype, random_state, verbose.

    Attributes after ``fit``: ``classes_``, ``n_features_in_``, ``model_`` (the gradflow model),
    ``loss_curve_`` (training loss per epoch), ``n_iter_`` (epochs run).
    """

    def fit(self, X: Any, y: Any) -> "GradflowClassifier":
        """Train a fresh network on ``X``, ``y`` (scikit-learn's ``fit``); returns self.

        Args:
            X: array-like (n_samples, n_features).
            y: array-like (n_samples,) of labels (any hashable values).
        """
        from .losses import SoftmaxCrossEntropy

        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                             f"got only one class: {self.classes_[0]!r}")
        self._train(X, encoded.astype(np.int64), len(self.classes_), SoftmaxCrossEntropy())
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the outputs), columns in the order of ``classes_``.

        Args:
            X: array-like (n_samples, n_features).
        """
        logits = self._outputs(X)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The log of :meth:`predict_proba`.

        Args:
            X: array-like (n_samples, n_features).
        """
        logits = self._outputs(X)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for ``X`` (array-like (n_samples, n_features)): class labels, as given to fit."""
        logits = self._outputs(X)
        return self.classes_[np.argmax(logits, axis=1)]


class GradflowRegressor(RegressorMixin, _GradflowMLP):
    """An MLP regressor trained with mean squared error on standardised targets; one or several
    outputs (``y`` of shape (n,) or (n, k)).

    Parameters as :class:`GradflowClassifier`. Attributes after ``fit``: ``n_features_in_``,
    ``model_``, ``loss_curve_`` (on the standardised scale), ``n_iter_``.
    """

    def fit(self, X: Any, y: Any) -> "GradflowRegressor":
        """Train a fresh network on ``X``, ``y`` (scikit-learn's ``fit``); returns self.

        Args:
            X: array-like (n_samples, n_features).
            y: array-like (n_samples,) of labels or (n_samples, n_outputs) of targets.
        """
        from .losses import MSE

        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        targets = y.reshape(len(y), -1)
        self._y_mean = targets.mean(axis=0)
        scale = targets.std(axis=0)
        self._y_scale = np.where(scale > 0, scale, 1.0)
        self._train(X, (targets - self._y_mean) / self._y_scale, targets.shape[1], MSE())
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for ``X`` (array-like (n_samples, n_features)): the regression outputs."""
        outputs = self._outputs(X) * self._y_scale + self._y_mean
        return outputs[:, 0] if self._y_1d else outputs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


__all__ = ["GradflowClassifier", "GradflowRegressor"]
