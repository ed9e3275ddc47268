"""gradflow: neural networks with explicit δ-backpropagation on NumPy (CPU) or CuPy (CUDA).

    import gradflow as gf
    dev = gf.device("auto")
    model = gf.Sequential(gf.layers.Linear(64, 128), gf.layers.ReLU(), gf.layers.Linear(128, 10)).to(dev)
    y, backprop = model(dev.send(x), train=True)
    loss, delta = gf.losses.SoftmaxCrossEntropy()(y, dev.send(labels))
    backprop(delta)
"""

__version__ = "0.1.0"

from . import backend, init, layers, losses, optim
from .backend import Device, DeviceError, device, devices, from_dlpack, to_numpy
from .containers import Concat, Residual, Sequential
from .core import Buffer, Layer, Parameter
from .init import seed

__all__ = [
    "__version__", "backend", "init", "layers", "losses", "optim",
    "Device", "DeviceError", "device", "devices", "from_dlpack", "to_numpy",
    "Concat", "Residual", "Sequential", "Buffer", "Layer", "Parameter", "seed",
]

# Training: fit/evaluate/predict, metrics, callbacks, checkpoints, diagnostics (gradflow.plot,
# gradflow.cli and gradflow.sklearn are imported on use: they need optional packages).
from . import callbacks, checkpoint, diagnostics, metrics, train  # noqa: E402
from .checkpoint import load, save  # noqa: E402

__all__ += ["callbacks", "checkpoint", "diagnostics", "metrics", "train", "load", "save"]
