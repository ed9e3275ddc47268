"""The ``gradflow`` command (also ``python -m gradflow``).

    gradflow train --model mlp --dataset digits --epochs 20 --plots runs/digits
    gradflow train --epochs 40 --checkpoint run.safetensors --resume run.safetensors
    gradflow info
    gradflow gradcheck

``train`` fits one of the built-in models (mlp, cnn, gru) on a bundled dataset (digits, mnist1d),
holding out ``--validation-split`` of the training set for the per-epoch ``val_*`` numbers and
reporting the test set at the end. ``info`` prints versions, devices (and why CUDA is missing),
array libraries and BLAS. ``gradcheck`` runs :func:`gradflow.testing.check_layer` over the
built-in layers on every device here and prints a layer x device table.

A mistaken argument ends the command with one line naming the argument, what it accepts and what
it got, and exit status 2 (no traceback). ``--help`` shows every option's default.

**BLAS threads, one policy for every entry point.** ``gradflow train`` and every script in
``examples/`` run NumPy's BLAS on one thread by default (``--blas-threads N`` to change it, ``0`` to
leave the BLAS library's own default). The models they train are small: a second BLAS thread costs
more in hand-offs than it saves, and on a machine where another process holds a core a spinning
BLAS thread made training 5-20x slower. GPU work does not use the host BLAS. The limit applies
through threadpoolctl (a dependency of gradflow) while the command trains; a library call of your
own is not limited unless you use :func:`blas_threads` (or ``gradflow.backend.limit_blas_threads``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from . import __version__, backend
from .backend import Array
from .core import Backprop, Layer, check_input

from .optim.optimizers import OPTIMIZERS as _OPTIMIZER_CLASSES

OPTIMIZERS = tuple(_OPTIMIZER_CLASSES)  # every optimizer of gradflow.optim, by name
VERBOSE = ("0", "1", "2", "auto")
DEVICE_NAMES = ("cpu", "cuda", "cuda:N", "auto")
# Schedules laid out over a fixed number of steps (the run's --epochs): a resumed run that asks
# for more epochs must extend them (--extend-schedule) or it would continue at their final lr.
HORIZON_SCHEDULES = ("cosine", "onecycle", "step")


# --------------------------------------------------------------------------------------------
# Shared by every entry point (the gradflow command and the scripts in examples/)
# --------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` keeps the description's line breaks and shows every option's default (those
    that have one: not None, not False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and _shows_default(action) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and _shows_default(action):
            action.help = "default: %(default)s"  # an option without help text still shows its default
        return super()._format_action(action)


def _shows_default(action: argparse.Action) -> bool:
    return not any(action.default is nothing for nothing in (None, False, True, argparse.SUPPRESS))


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line, ``prog: error: message``, exit 2.

    (argparse's own prints the whole usage block above the message.)
    """

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see prog --help)`` on stderr and exit with status 2.

        Args:
            message: what was wrong, naming the argument.
        """
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` that accepts a finite ``kind`` in [low, high] (open ends as asked)."""
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = "any finite number"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {allowed}, got {text!r}") from None
        bad = (not math.isfinite(value)
               or (low is not None and (value <= low if low_open else value < low))
               or (high is not None and (value >= high if high_open else value > high)))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {noun} {allowed}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def add_blas_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--blas-threads`` (default 1; 0 leaves the BLAS library's default): see the module docstring.

    Args:
        parser: the argparse parser (or subparser) of an entry point.
    """
    parser.add_argument("--blas-threads", type=_number(int, 0), default=1,
                        help="threads for NumPy's BLAS while training (0: the BLAS library's own default)")


def blas_threads(count: int) -> Any:
    """A context manager running NumPy's BLAS on ``count`` threads (``0``: leave it as it is).

    Args:
        count: the number of BLAS threads, >= 1, or 0 for no limit.
    """
    if count == 0:
        return contextlib.nullcontext()
    return backend.limit_blas_threads(count)

SCHEDULES = ("constant", "cosine", "onecycle", "step", "plateau")
MODELS = ("mlp", "cnn", "gru")
DATASETS = ("digits", "mnist1d")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class LastTimeStep(Layer):
    """(N, T, H) -> (N, H): the last time step of a sequence (a 2-D input passes through).

    δ rule: ``dx[:, -1] = dy``, zeros at the other steps.
    """

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, ndim=(2, 3))
        if x.ndim == 2:
            return x, lambda dy: dy
        xp = backend.namespace(x)
        steps = x.shape[1]
        y = x[:, -1, :]

        def backprop(dy: Array) -> Array:
            zeros = xp.zeros((dy.shape[0], steps - 1, dy.shape[1]), dtype=dy.dtype, device=dy.device)
            return xp.concat([zeros, dy[:, None, :]], axis=1)

        return y, backprop


def _layer(name: str, model: str) -> Any:
    """A layer class from gradflow.layers, with a clear message when this installation lacks it."""
    from . import layers

    found = getattr(layers, name, None)
    if found is None:
        raise SystemExit(f"gradflow train: the {model} model needs gradflow.layers.{name}, which this installation "
                         f"does not have yet; use --model mlp")
    return found


def _flat_size(stack: Layer, sample_shape: tuple[int, ...]) -> int:
    """Feature count of ``stack``'s output for one sample (a dry forward pass on zeros)."""
    y = stack.predict(backend.device("cpu").send(np.zeros((1, *sample_shape)), "float32"))
    return int(np.prod(y.shape[1:]))


def build_model(name: str, sample_shape: tuple[int, ...], classes: int, seed: int = 0) -> Layer:
    """The built-in models. mlp: two hidden ReLU layers of 128. cnn: two conv blocks (Conv2d for
    images (C, H, W), Conv1d for sequences (C, L)) then a linear classifier. gru: a GRU over the
    sequence (T, features), its last step, then a linear classifier.

    Args:
        name: "mlp", "cnn" or "gru".
        sample_shape: the shape of one input sample (without the batch axis).
        classes: the number of output classes.
        seed: seeds each layer's initialisation (layer i gets ``seed + i``).
    """
    from . import layers as L
    from .containers import Sequential

    if name == "mlp":
        width = int(np.prod(sample_shape))
        front: list[Layer] = [L.Flatten()] if len(sample_shape) > 1 else []
        return Sequential(*front, L.Linear(width, 128, init="he_normal", rng=seed), L.ReLU(),
                          L.Linear(128, 128, init="he_normal", rng=seed + 1), L.ReLU(),
                          L.Linear(128, classes, rng=seed + 2))
    if name == "cnn":
        try:
            if len(sample_shape) == 3:
                Conv, Pool = _layer("Conv2d", "cnn"), _layer("MaxPool2d", "cnn")
                features = Sequential(Conv(sample_shape[0], 16, 3, padding=1, rng=seed), L.ReLU(), Pool(2),
                                      Conv(16, 32, 3, padding=1, rng=seed + 1), L.ReLU(), L.Flatten())
            elif len(sample_shape) == 2:
                Conv = _layer("Conv1d", "cnn")
                features = Sequential(Conv(sample_shape[0], 16, 5, padding=2, rng=seed), L.ReLU(),
                                      Conv(16, 32, 5, stride=2, padding=2, rng=seed + 1), L.ReLU(), L.Flatten())
            else:
                raise SystemExit(f"gradflow train: the cnn model needs (C, H, W) or (C, L) samples, got {sample_shape}")
        except TypeError as error:
            raise SystemExit(f"gradflow train: the conv layers do not take the arguments the cnn model passes "
                             f"(in, out, kernel_size, stride=, padding=, rng=): {error}") from None
        return Sequential(*features.layers, L.Linear(_flat_size(features, sample_shape), classes, rng=seed + 2))
    if name == "gru":
        if len(sample_shape) != 2:
            raise SystemExit(f"gradflow train: the gru model needs (T, features) samples, got {sample_shape}")
        GRU = _layer("GRU", "gru")
        try:
            recurrent = Sequential(GRU(sample_shape[1], 64, rng=seed), LastTimeStep())
        except TypeError as error:
            raise SystemExit(f"gradflow train: GRU does not take the arguments the gru model passes "
                             f"(input_size, hidden_size, rng=): {error}") from None
        return Sequential(*recurrent.layers, L.Linear(_flat_size(recurrent, sample_shape), classes, rng=seed + 1))
    raise SystemExit(f"gradflow train: unknown model {name!r}; choose from {', '.join(MODELS)}")


def load_dataset(name: str, model: str, seed: int = 0) -> Any:
    """The bundled dataset shaped for the model: flat for mlp, channels first for cnn,
    (T, features) sequences for gru.

    Args:
        name: "digits" or "mnist1d".
        model: the model it is shaped for ("mlp", "cnn" or "gru").
        seed: the seed of the digits' train/test split (MNIST-1D uses the paper's).
    """
    from . import datasets

    if name == "digits":
        split = datasets.digits(images=model == "cnn", seed=seed)
        if model == "gru":
            split = split._replace(x_train=split.x_train.reshape(-1, 8, 8), x_test=split.x_test.reshape(-1, 8, 8))
        return split
    if name == "mnist1d":
        split = datasets.mnist1d(channels=model == "cnn")
        if model == "gru":
            split = split._replace(x_train=split.x_train[:, :, None], x_test=split.x_test[:, :, None])
        return split
    raise SystemExit(f"gradflow train: unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def build_optimizer(name: str, model: Layer, lr: Any, weight_decay: float) -> Any:
    """The optimizer ``name`` over ``model``'s parameters (SGD with momentum 0.9).

    Args:
        name: one of ``OPTIMIZERS``.
        model: the model to optimise.
        lr: a learning rate or a schedule (``step -> lr``).
        weight_decay: the L2 penalty, >= 0.
    """
    from .optim import optimizer_class

    extra = {"momentum": 0.9} if name == "sgd" else {}
    return optimizer_class(name, "--optimizer")(model, lr=lr, weight_decay=weight_decay, **extra)


def build_schedule(name: str, lr: float, total_steps: int, steps_per_epoch: int, warmup: int) -> Any:
    """The learning-rate schedule ``name`` (a float for "constant").

    Args:
        name: one of ``SCHEDULES``.
        lr: the peak learning rate.
        total_steps: the steps the schedule is laid out over (epochs x steps per epoch).
        steps_per_epoch: optimizer steps in one epoch.
        warmup: linear warm-up steps before the schedule (0: none).
    """
    from . import optim

    if name == "constant":
        schedule: Any = lr
    elif name == "cosine":
        schedule = optim.CosineAnnealing(lr, total_steps=max(1, total_steps - warmup))
    elif name == "onecycle":
        schedule = optim.OneCycle(lr, total_steps=total_steps)
    elif name == "step":
        schedule = optim.StepLR(lr, step_size=max(1, total_steps // 3), gamma=0.1)
    else:
        schedule = optim.ReduceLROnPlateau(lr, monitor="val_loss", factor=0.5, patience=2)
    return optim.LinearWarmup(schedule, warmup_steps=warmup) if warmup else schedule


# --------------------------------------------------------------------------------------------
# gradflow train
# --------------------------------------------------------------------------------------------

# What a checkpoint remembers of the command line, so --resume rebuilds the same run;
# "horizon" is the epoch count the learning-rate schedule was laid out for.
_SAVED_ARGS = ("model", "dataset", "optimizer", "lr", "schedule", "warmup", "weight_decay", "batch_size", "seed",
               "limit", "validation_split", "metrics", "horizon")


def _train_parser(commands: Any) -> None:
    p = commands.add_parser("train", help="train a built-in model on a bundled dataset", formatter_class=HelpFormatter,
                            description="Train a built-in model on a bundled dataset, report the validation "
                                        "numbers per epoch and the test set at the end.")
    p.add_argument("--model", choices=MODELS, default="mlp", help="the built-in model")
    p.add_argument("--dataset", choices=DATASETS, default="digits", help="mnist1d needs pip install mnist1d")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA if present, else cpu)")
    p.add_argument("--epochs", type=_number(int, 1), default=20, help="train until this epoch")
    p.add_argument("--batch-size", type=_number(int, 1), default=32, help="samples per training step")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="sgd has momentum 0.9")
    p.add_argument("--lr", type=_number(float, 0, low_open=True), default=1e-3, help="peak learning rate")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant", help="learning-rate schedule")
    p.add_argument("--warmup", type=_number(int, 0), default=0, help="linear warm-up steps before the schedule")
    p.add_argument("--weight-decay", type=_number(float, 0), default=0.0, help="L2 penalty (decoupled for adamw)")
    p.add_argument("--validation-split", type=_number(float, 0, 1, high_open=True), default=0.1,
                   help="fraction of the training set held out for val_* numbers")
    p.add_argument("--metrics", type=_metric_names, default="accuracy",
                   help="comma-separated, e.g. accuracy,f1,top3_accuracy")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the split and the shuffling")
    p.add_argument("--limit", type=_number(int, 1), default=None, help="use only the first N training samples")
    p.add_argument("--checkpoint", default=None, help="save a checkpoint here after every epoch")
    p.add_argument("--resume", default=None, help="continue the run saved in this checkpoint (its settings win)")
    p.add_argument("--extend-schedule", action="store_true",
                   help="with --resume and more --epochs than the saved run planned: lay its cosine, onecycle "
                        "or step schedule out again over the new --epochs, continuing from the saved step")
    p.add_argument("--plots", default=None, help="write curves.png and gradient_flow.png into this directory")
    p.add_argument("--patience", type=_number(int, 1), default=None,
                   help="early stopping on val_loss after N epochs without improvement")
    p.add_argument("--verbose", choices=VERBOSE, default="auto",
                   help="0 silent, 1 progress bar, 2 one line per epoch, auto: a bar on a terminal, else lines")
    add_blas_threads_argument(p)
    p.set_defaults(handler=train_command)


def _metric_names(text: str) -> str:
    """argparse ``type`` for --metrics: every comma-separated name must be a known metric."""
    from . import metrics

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one metric name")
    for name in names:
        try:
            metrics.get(name)
        except ValueError:
            known = ", ".join(sorted(set(metrics._NAMES) | {"topK_accuracy"}))
            raise argparse.ArgumentTypeError(f"unknown metric {name!r}; allowed: {known}") from None
    return ",".join(names)


def _usage_error(prog: str, message: str) -> NoReturn:
    """One line on stderr and exit status 2, as argparse does for a mistaken argument."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def _check_device(spec: str, prog: str) -> Any:
    from . import backend as _backend

    try:
        return _backend.device(spec)
    except (ValueError, TypeError) as error:
        _usage_error(prog, f"argument --device: expected one of {', '.join(DEVICE_NAMES)}, got {spec!r} "
                           f"({str(error).splitlines()[0]})")
    except (_backend.DeviceError, ImportError) as error:
        _usage_error(prog, f"argument --device: {spec!r} is not usable here: {str(error).splitlines()[0]} "
                           "(gradflow info lists the devices)")


def train_command(args: argparse.Namespace) -> int:
    """``gradflow train``: build, train (or resume), evaluate on the test set; returns the exit status.

    Args:
        args: the parsed command line (see ``gradflow train --help``).
    """
    from . import callbacks as C
    from .checkpoint import read
    from .diagnostics import GradientFlowMonitor
    from .losses import SoftmaxCrossEntropy
    from .train import evaluate, fit

    prog = "gradflow train"
    args.horizon = args.epochs
    if args.resume:
        from .checkpoint import CheckpointError

        if not os.path.isfile(args.resume):
            _usage_error(prog, f"argument --resume: no checkpoint file {args.resume!r}")
        try:
            checkpoint = read(args.resume)
        except (CheckpointError, ImportError, OSError) as error:
            _usage_error(prog, f"argument --resume: {args.resume!r} is not a readable gradflow checkpoint "
                               f"({str(error).splitlines()[0]})")
        saved = checkpoint.extra.get("cli_args")
        if saved:
            for key in _SAVED_ARGS:
                setattr(args, key, saved[key])
            print(f"resuming {args.resume}: {', '.join(f'{k}={saved[k]}' for k in _SAVED_ARGS)}")
        done = int(checkpoint.epoch or 0)
        if args.epochs <= done:
            _usage_error(prog, f"argument --epochs: {args.resume} is already at epoch {done}; "
                               f"ask for more (--epochs {done + 10}, say)")
        if args.epochs > args.horizon and args.schedule in HORIZON_SCHEDULES:
            if not args.extend_schedule:
                _usage_error(prog, f"argument --epochs: the {args.schedule} schedule of {args.resume} was laid out "
                                   f"for {args.horizon} epochs and ends there (its learning rate would stay at its "
                                   f"final value); add --extend-schedule to lay it out over {args.epochs} epochs, "
                                   f"or ask for at most --epochs {args.horizon}")
            print(f"extending the {args.schedule} schedule from {args.horizon} to {args.epochs} epochs")
            args.horizon = args.epochs
    dev = _check_device(args.device, prog)
    data = load_dataset(args.dataset, args.model, seed=args.seed)
    x_train, y_train = data.x_train, data.y_train
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    model = build_model(args.model, tuple(x_train.shape[1:]), classes, seed=args.seed).to(dev)
    train_count = int(len(x_train) * (1.0 - args.validation_split))
    steps_per_epoch = -(-train_count // args.batch_size)
    lr = build_schedule(args.schedule, args.lr, steps_per_epoch * args.horizon, steps_per_epoch, args.warmup)
    optimizer = build_optimizer(args.optimizer, model, lr, args.weight_decay)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    callbacks: list[Any] = [C.TerminateOnNaN(check_every=max(1, steps_per_epoch))]
    if args.patience is not None:
        callbacks.append(C.EarlyStopping(patience=args.patience, restore_best_weights=True))
    if args.checkpoint:
        cli_args = {key: getattr(args, key) for key in _SAVED_ARGS}
        callbacks.append(C.ModelCheckpoint(args.checkpoint, extra={"cli_args": cli_args}))
    monitor = None
    if args.plots:
        monitor = GradientFlowMonitor(every=max(1, steps_per_epoch // 10))
        callbacks.append(monitor)
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    if train_count < 1 or (args.validation_split and train_count >= len(x_train)):
        _usage_error(prog, f"argument --validation-split: {args.validation_split} of {len(x_train)} samples leaves "
                           "no training or no validation samples")
    print(f"gradflow {__version__} on {dev}: {args.model} on {args.dataset}, {train_count} training / "
          f"{len(x_train) - train_count} validation / {len(data.x_test)} test samples, {args.optimizer} lr {args.lr:g}")
    started = time.perf_counter()
    with blas_threads(args.blas_threads):
        history = fit(model, SoftmaxCrossEntropy(), optimizer, (x_train, y_train), epochs=args.epochs,
                      batch_size=args.batch_size, validation_split=args.validation_split or 0.0, metrics=metrics,
                      callbacks=callbacks, seed=args.seed, verbose=verbose, resume=args.resume)
        results = evaluate(model, SoftmaxCrossEntropy(), (data.x_test, data.y_test), metrics=metrics)
    shown = "  ".join(f"{name} {value:.4f}" for name, value in results.items())
    print(f"test {shown} ({time.perf_counter() - started:.1f}s)")
    if args.plots and history:
        from . import plot

        paths = [plot.history(history, os.path.join(args.plots, "curves.png"), title=f"{args.model} on {args.dataset}")]
        if monitor is not None and monitor.record is not None and len(monitor.record):
            print(monitor.record.summary())
            paths.append(plot.gradient_flow(monitor.record, os.path.join(args.plots, "gradient_flow.png"),
                                            title=f"gradient flow: {args.model} on {args.dataset}"))
        print("plots: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------------------------
# gradflow info
# --------------------------------------------------------------------------------------------


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def info_command(args: argparse.Namespace) -> int:
    """``gradflow info``: print versions, devices, libraries and BLAS; returns 0.

    Args:
        args: the parsed command line (unused).
    """
    from .testing import available_devices

    print(f"gradflow {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}, {platform.system()} {platform.release()})")
    print("devices:")
    for name, dev, why in available_devices(("cpu", "strict", "torch", "cuda")):
        if dev is not None:
            print(f"  {name:<7} available  ({dev.name}{_cuda_names() if name == 'cuda' else ''})")
        else:
            print(f"  {name:<7} missing    {why}")
    print("array libraries:")
    for module, version in backend.library_versions().items():
        print(f"  {module:<17} {version}")
    print("optional packages:")
    for package in ("safetensors", "tqdm", "matplotlib", "scikit-learn", "mnist1d", "threadpoolctl", "mpi4py"):
        print(f"  {package:<17} {_package_version(package) or 'not installed'}")
    print("BLAS:")
    blas = backend.blas_info()
    if not blas:
        print("  unknown (pip install threadpoolctl to see the BLAS NumPy loaded)")
    for entry in blas:
        print("  " + ", ".join(f"{k} {v}" for k, v in entry.items()))
    settings = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "CUDA_VISIBLE"))}
    if settings:
        print("environment: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
    return 0


def _cuda_names() -> str:
    try:
        import cupy

        names = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(backend.cuda_device_count())]
        return ": " + ", ".join(names)
    except Exception:
        return ""


# --------------------------------------------------------------------------------------------
# gradflow gradcheck
# --------------------------------------------------------------------------------------------


def gradcheck_cases() -> list[tuple[str, Callable[[], Layer] | None, Any, str, dict[str, Any]]]:
    """(label, factory or None, sample input shape (or the sample itself), why skipped,
    check_layer options) for every built-in layer.

    Layers whose modules are not part of this installation are left out; a layer of
    gradflow.layers without a known sample input is listed as skipped.
    """
    from . import layers as L

    shapes: dict[str, list[tuple[Any, ...]]] = {
        "Linear": [("Linear(5, 3)", lambda: L.Linear(5, 3, rng=0), (4, 5)),
                   ("Linear(5, 3, bias=False)", lambda: L.Linear(5, 3, bias=False, rng=0), (4, 5))],
        "Flatten": [("Flatten()", lambda: L.Flatten(), (3, 2, 4))],
        "Reshape": [("Reshape(4, 2)", lambda: L.Reshape(4, 2), (3, 8))],
        "Identity": [("Identity()", lambda: L.Identity(), (3, 4))],
        "Softmax": [("Softmax()", lambda: L.Softmax(), (3, 5))],
        "LogSoftmax": [("LogSoftmax()", lambda: L.LogSoftmax(), (3, 5))],
        "Conv1d": [("Conv1d(2, 3, 3)", lambda: L.Conv1d(2, 3, 3, rng=0), (2, 2, 7))],
        "Conv2d": [("Conv2d(2, 3, 3)", lambda: L.Conv2d(2, 3, 3, rng=0), (2, 2, 6, 5))],
        "MaxPool2d": [("MaxPool2d(2)", lambda: L.MaxPool2d(2), (2, 2, 6, 4))],
        "MaxPool1d": [("MaxPool1d(2)", lambda: L.MaxPool1d(2), (2, 3, 7))],
        "AvgPool1d": [("AvgPool1d(2)", lambda: L.AvgPool1d(2), (2, 3, 7))],
        "AvgPool2d": [("AvgPool2d(2)", lambda: L.AvgPool2d(2), (2, 2, 6, 5))],
        "GlobalAvgPool": [("GlobalAvgPool()", lambda: L.GlobalAvgPool(), (2, 3, 4, 5))],
        "ConvTranspose1d": [("ConvTranspose1d(2, 3, 3)", lambda: L.ConvTranspose1d(2, 3, 3, rng=0), (2, 2, 5))],
        "ConvTranspose2d": [("ConvTranspose2d(2, 3, 3)", lambda: L.ConvTranspose2d(2, 3, 3, rng=0), (2, 2, 4, 3))],
        "BatchNorm1d": [("BatchNorm1d(3), eval mode", lambda: L.BatchNorm1d(3), (4, 3)),
                        ("BatchNorm1d(3), train mode", lambda: L.BatchNorm1d(3), (4, 3), {"train": True})],
        "BatchNorm2d": [("BatchNorm2d(3), eval mode", lambda: L.BatchNorm2d(3), (2, 3, 4, 3)),
                        ("BatchNorm2d(3), train mode", lambda: L.BatchNorm2d(3), (2, 3, 4, 3), {"train": True})],
        "GroupNorm": [("GroupNorm(2, 4)", lambda: L.GroupNorm(2, 4), (2, 4, 3, 3))],
        "Conv3d": [("Conv3d(2, 3, 2, padding_mode='circular')",
                    lambda: L.Conv3d(2, 3, 2, padding=1, padding_mode="circular", rng=0), (2, 2, 3, 3, 2))],
        "ConvTranspose3d": [("ConvTranspose3d(2, 3, 2, stride=2)", lambda: L.ConvTranspose3d(2, 3, 2, stride=2, rng=0),
                             (2, 2, 2, 2, 3))],
        "AdaptiveAvgPool1d": [("AdaptiveAvgPool1d(3)", lambda: L.AdaptiveAvgPool1d(3), (2, 3, 7))],
        "AdaptiveAvgPool2d": [("AdaptiveAvgPool2d((2, 3))", lambda: L.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7))],
        "AdaptiveMaxPool1d": [("AdaptiveMaxPool1d(3)", lambda: L.AdaptiveMaxPool1d(3), (2, 3, 7))],
        "AdaptiveMaxPool2d": [("AdaptiveMaxPool2d((2, 3))", lambda: L.AdaptiveMaxPool2d((2, 3)), (2, 2, 5, 7))],
        "MaxUnpool1d": [("MaxUnpool1d(2)", lambda: L.MaxUnpool1d(2), (2, 2, 3),
                         {"call_kwargs": {"indices": np.array([0, 3, 4]) + np.zeros((2, 2, 1), dtype=np.int64)}})],
        "MaxUnpool2d": [("MaxUnpool2d(2)", lambda: L.MaxUnpool2d(2), (2, 2, 2, 2),
                         {"call_kwargs": {"indices": np.array([[0, 3], [9, 14]]) + np.zeros((2, 2, 1, 1), dtype=np.int64)}})],
        "InstanceNorm1d": [("InstanceNorm1d(3, affine=True)", lambda: L.InstanceNorm1d(3, affine=True), (2, 3, 5))],
        "InstanceNorm2d": [("InstanceNorm2d(3)", lambda: L.InstanceNorm2d(3), (2, 3, 4, 3))],
        "RMSNorm": [("RMSNorm(5)", lambda: L.RMSNorm(5), (3, 5))],
        "GRU": [("GRU(3, 4)", lambda: L.GRU(3, 4, rng=0), (2, 5, 3))],
        "LSTM": [("LSTM(3, 4, bidirectional)", lambda: L.LSTM(3, 4, bidirectional=True, rng=0), (2, 5, 3))],
        "RNN": [("RNN(3, 4, num_layers=2)", lambda: L.RNN(3, 4, num_layers=2, rng=0), (2, 5, 3))],
        "RNNCell": [("RNNCell(3, 4)", lambda: L.RNNCell(3, 4, rng=0), (2, 3))],
        "LSTMCell": [("LSTMCell(3, 4)", lambda: L.LSTMCell(3, 4, rng=0), (2, 3))],
        "GRUCell": [("GRUCell(3, 4)", lambda: L.GRUCell(3, 4, rng=0), (2, 3))],
        "Dropout": [("Dropout(0.5), eval mode", lambda: L.Dropout(0.5), (3, 4))],
        "LayerNorm": [("LayerNorm(5)", lambda: L.LayerNorm(5), (3, 5))],
        "Embedding": [("Embedding(6, 3)", lambda: L.Embedding(6, 3, rng=0), np.array([[0, 5, 2], [2, 2, 1]]),
                       {"check_input_gradient": False, "noncontiguous": False})],
        "MultiHeadAttention": [("MultiHeadAttention(6, 2, causal)", lambda: L.MultiHeadAttention(6, 2, causal=True, rng=0),
                                (2, 4, 6))],
        "TransformerEncoderBlock": [("TransformerEncoderBlock(6, 2)",
                                     lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=2, rng=0), (2, 4, 6))],
        "TransformerDecoderBlock": [("TransformerDecoderBlock(6, 2), memory (2, 3, 6)",
                                     lambda: L.TransformerDecoderBlock(6, 2, mlp_ratio=2, rng=0), (2, 4, 6),
                                     {"call_kwargs": {"memory": _sample((2, 3, 6))}, "inputs": ("memory",)})],
        "LearnedPositionalEncoding": [("LearnedPositionalEncoding(7, 6)",
                                       lambda: L.LearnedPositionalEncoding(7, 6, rng=0), (2, 4, 6))],
        "SinusoidalPositionalEncoding": [("SinusoidalPositionalEncoding(6)",
                                          lambda: L.SinusoidalPositionalEncoding(6), (2, 4, 6))],
    }
    elementwise = ("ELU", "GELU", "LeakyReLU", "ReLU", "Sigmoid", "SiLU", "Tanh")
    cases = []
    for name in sorted(getattr(L, "__all__", [])):
        if name in shapes:
            cases += [(entry[0], entry[1], entry[2], "", entry[3] if len(entry) > 3 else {}) for entry in shapes[name]]
        elif name in elementwise:
            cases.append((f"{name}()", getattr(L, name), (3, 4), "", {}))
        else:
            cases.append((name, None, (), "no sample input known to gradflow gradcheck", {}))
    return cases


def _sample(shape: "tuple[int, ...] | np.ndarray") -> np.ndarray:
    if isinstance(shape, np.ndarray):  # a fixed sample (e.g. token ids)
        return shape
    x = np.random.default_rng(0).standard_normal(shape)
    return np.where(np.abs(x) < 1e-2, 0.5, x)  # keep away from kinks (ReLU at 0)


def gradcheck_command(args: argparse.Namespace) -> int:
    """``gradflow gradcheck``: the layer x device table; returns 1 when a check fails, else 0.

    Args:
        args: the parsed command line (``args.devices``: a comma-separated subset, or None for all).
    """
    from .testing import available_devices, check_layer

    devices = available_devices()
    wanted = set(args.devices.split(",")) if args.devices else None
    known = [name for name, _, _ in devices]
    unknown = sorted((wanted or set()) - set(known))
    if unknown or wanted == set():
        _usage_error("gradflow gradcheck", f"argument --devices: unknown device {', '.join(map(repr, unknown)) or 'list'}; "
                                           f"allowed: a comma-separated subset of {', '.join(known)}")
    columns = [name for name, _, _ in devices if wanted is None or name in wanted]
    rows = []
    failures = []
    for label, factory, shape, why, options in gradcheck_cases():
        cells = []
        for name, dev, missing in devices:
            if name not in columns:
                continue
            if dev is None:
                cells.append("skipped")
            elif factory is None:
                cells.append("skipped")
            else:
                try:
                    check_layer(factory, _sample(shape), devices=[dev], **options)
                    cells.append("ok")
                except Exception as error:
                    cells.append("FAIL")
                    failures.append(f"{label} on {name}: {type(error).__name__}: {str(error).splitlines()[0]}")
        rows.append((label, cells, why))
    width = max(len(label) for label, _, _ in rows) + 2
    print(f"{'layer':<{width}}" + "".join(f"{name:>9}" for name in columns))
    for label, cells, why in rows:
        note = f"   ({why})" if why else ""
        print(f"{label:<{width}}" + "".join(f"{cell:>9}" for cell in cells) + note)
    for name, dev, missing in devices:
        if dev is None and name in columns:
            print(f"{name}: skipped, {missing}")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


# --------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    """The ``gradflow`` parser: one subparser per command (``train``, ``info``, ``gradcheck``...).

    A command is added with ``commands.add_parser(name, help=..., description=...,
    formatter_class=HelpFormatter)`` and ``set_defaults(handler=function)``, where ``function(args)``
    returns the exit status.
    """
    parser = ArgumentParser(prog="gradflow", formatter_class=HelpFormatter,
                            description="gradflow: train, inspect and check. `gradflow COMMAND --help` describes "
                                        "each command.")
    parser.add_argument("--version", action="version", version=f"gradflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _train_parser(commands)
    info = commands.add_parser("info", help="versions, devices, array libraries and BLAS", formatter_class=HelpFormatter,
                               description="Print gradflow's version, the devices here (and why CUDA is missing), "
                                           "the array libraries, optional packages and the BLAS NumPy uses.")
    info.set_defaults(handler=info_command)
    check = commands.add_parser("gradcheck", help="check every built-in layer on every device here",
                                formatter_class=HelpFormatter,
                                description="Run gradflow.testing.check_layer (forward against float64 NumPy, "
                                            "δ-backward against finite differences, device parity) on every built-in "
                                            "layer and device, and print a layer x device table. Exit status 1 when "
                                            "a check fails.")
    check.add_argument("--devices", default=None,
                       help="comma-separated subset of cpu, strict, torch, cuda (default: all of them)")
    check.set_defaults(handler=gradcheck_command)
    from . import selfcheck

    doctor = commands.add_parser("doctor", help="the GPU self-check (python -m gradflow.selfcheck); fails without a GPU",
                                 formatter_class=HelpFormatter,
                                 description="Check every visible GPU: the parity suite, a training run, NCCL "
                                             "all-reduce with two GPUs and a short benchmark, and write a Markdown "
                                             "report. Exit status 1, with a one-line reason, when no GPU is usable.")
    selfcheck.add_arguments(doctor)
    doctor.set_defaults(handler=selfcheck.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gradflow`` command; returns the exit status (2 for a usage error or no command).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
