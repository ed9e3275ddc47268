"""Checkpoints: ``gradflow.save`` / ``gradflow.load``. safetensors for arrays, JSON for the rest,
no pickle anywhere.

    gf.save("run.safetensors", model, optimizer, epoch=3, data=batches)
    ckpt = gf.load("run.safetensors", model, optimizer, data=batches)   # ckpt.epoch == 3

One file: a safetensors file whose arrays are the model's ``state_dict`` (``model/<name>``) and
the optimizer's slots (``optimizer/<index>.<slot>``), and whose header metadata holds one JSON
document under the key ``"gradflow"``: format version, the architecture (``repr(model)``),
epoch and step, optimizer class, hyper-parameters, step counter and schedule state, the RNG
states, the training history and callback states, and anything passed as ``extra``. Any
safetensors reader can open the arrays.

RNG states saved: the initializer's default generator (:func:`gradflow.init.seed`), the data
iterator's (``data.get_state()``), and every layer's generator, found by a generic hook — a
layer that owns random state (dropout masks, say) either defines

    def rng_state(self) -> dict: ...            # JSON-serialisable
    def set_rng_state(self, state: dict) -> None: ...

or, failing that, ``get_state``/``set_state`` methods, or simply holds a
:class:`gradflow.backend.DeviceRNG` as an attribute (saved by attribute name). A state saved on
one kind of device that does not fit another (a CUDA counter RNG loaded on the CPU) is skipped
with a warning: the weights still load, only the random stream differs.

Writes are atomic: the file is written to a temporary file in the same directory, flushed and
fsynced, renamed over the target with ``os.replace``, and the directory is fsynced. A save that
fails or is interrupted leaves the previous file as it was (and removes its temporary file when
it still can), so nothing already saved is lost to a failed save.
"""

from __future__ import annotations

import datetime as _datetime
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backend
from .callbacks import History, callback_key

FORMAT = "gradflow-checkpoint"
# 2: Linear weights are stored (out_features, in_features) as in PyTorch; version 1 stored them
# (in, out), and a square one would load transposed without a word, so version 1 is refused.
FORMAT_VERSION = 2
METADATA_KEY = "gradflow"
_CHUNK = 1 << 22  # bytes per write call; small enough that an interrupt lands mid-file


class CheckpointError(ValueError):
    """A file that is not a gradflow checkpoint, is truncated or corrupt, or does not fit."""


@dataclass
class Checkpoint:
    """What :func:`load` read: the metadata plus the host arrays."""

    path: str
    metadata: dict[str, Any]
    model_state: dict[str, np.ndarray]
    optimizer_slots: dict[str, np.ndarray]
    history: History = field(default_factory=History)

    @property
    def epoch(self) -> int | None:
        return self.metadata.get("epoch")

    @property
    def step(self) -> int | None:
        return self.metadata.get("step")

    @property
    def extra(self) -> dict[str, Any]:
        return self.metadata.get("extra") or {}

    @property
    def architecture(self) -> str:
        return self.metadata["model"]["architecture"]


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as error:
        raise ImportError("gradflow checkpoints need safetensors: pip install 'gradflow[io]'") from error
    return st


# --------------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------------


def layer_rng_states(model: Any) -> dict[str, Any]:
    """The random state of every layer that has one (see the module docstring), by layer path."""
    states: dict[str, Any] = {}
    for name, layer in model.sublayers():
        getter = getattr(layer, "rng_state", None)
        if callable(getter) and callable(getattr(layer, "set_rng_state", None)):
            states[name] = {"rng_state": getter()}
            continue
        getter = getattr(layer, "get_state", None)
        if callable(getter) and callable(getattr(layer, "set_state", None)):
            states[name] = {"get_state": getter()}
            continue
        attributes = {attr: value.get_state() for attr, value in vars(layer).items()
                      if isinstance(value, backend.DeviceRNG)}
        if attributes:
            states[name] = {"attributes": attributes}
    return states


def set_layer_rng_states(model: Any, states: dict[str, Any]) -> list[str]:
    """Restore what :func:`layer_rng_states` saved; returns warnings for states that do not fit."""
    layers = dict(model.sublayers())
    problems = []
    for name, saved in states.items():
        layer = layers.get(name)
        where = f"layer {name!r}" if name else "the model"
        if layer is None:
            problems.append(f"{where} is not in the model; its RNG state was not restored")
            continue
        try:
            if "rng_state" in saved:
                layer.set_rng_state(saved["rng_state"])
            elif "get_state" in saved:
                layer.set_state(saved["get_state"])
            else:
                for attr, state in saved.get("attributes", {}).items():
                    target = getattr(layer, attr, None)
                    if not isinstance(target, backend.DeviceRNG):
                        raise ValueError(f"it has no generator {attr!r}")
                    target.set_state(state)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            problems.append(f"the RNG state of {where} ({type(layer).__name__}) was not restored: {error}")
    return problems


def _init_generator_state() -> dict[str, Any]:
    from . import init

    return init._default_generator.bit_generator.state


def _set_init_generator_state(state: dict[str, Any]) -> None:
    from . import init

    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    init._default_generator = generator


# --------------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------------


def _host(array: Any, what: str) -> np.ndarray:
    host = np.ascontiguousarray(backend.to_numpy(array))
    if host.dtype.kind not in "fiub":
        raise CheckpointError(f"save: {what} has dtype {host.dtype}, which safetensors cannot store")
    return host


def _hyperparameters(optimizer: Any) -> dict[str, Any]:
    skip = {"params", "schedule", "step_count", "base_lr"}
    found: dict[str, Any] = {"lr": optimizer.lr}
    for name, value in vars(optimizer).items():
        if name in skip or name.startswith("_"):
            continue
        if isinstance(value, (bool, int, float, str, type(None))):
            found[name] = value
        elif isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            found[name] = list(value)
    return found


def _optimizer_metadata(optimizer: Any) -> dict[str, Any]:
    schedule = optimizer.schedule
    described: dict[str, Any] | None = None
    if schedule is not None:
        getter = getattr(schedule, "state_dict", None)
        described = {"class": type(schedule).__name__, "repr": repr(schedule),
                     "state": getter() if callable(getter) else None}
    return {"class": type(optimizer).__name__, "hyperparameters": _hyperparameters(optimizer),
            "step": int(optimizer.step_count), "schedule": described}


def save(
    path: "str | os.PathLike",
    model: Any,
    optimizer: Any = None,
    *,
    epoch: int | None = None,
    step: int | None = None,
    data: Any = None,
    history: History | None = None,
    callbacks: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (and ``optimizer``, ``data``'s shuffling state, the
    history and callback states when given) to ``path``, atomically. Returns the path.

    ``extra`` is any JSON-serialisable dict of your own, returned as ``load(...).extra``.
    """
    st = _safetensors()
    path = Path(path)
    state = model.state_dict()
    arrays = {f"model/{name}": _host(value, f"model array {name!r}") for name, value in state.items()}
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gradflow_version": _version(),
        "created": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(model.device) if model.device is not None else None,
        "model": {"class": type(model).__name__, "architecture": repr(model), "keys": list(state)},
        "epoch": epoch,
        "step": step,
        "optimizer": None,
        "rng": {"init": _init_generator_state(), "data": None, "layers": layer_rng_states(model)},
        "history": history.to_dict() if history is not None else None,
        "callbacks": {callback_key(i, cb): cb.state_dict() for i, cb in enumerate(callbacks or [])},
        "extra": extra or {},
    }
    if optimizer is not None:
        for key, value in optimizer.state_dict()["slots"].items():
            arrays[f"optimizer/{key}"] = _host(value, f"optimizer slot {key!r}")
        metadata["optimizer"] = _optimizer_metadata(optimizer)
    if data is not None:
        metadata["rng"]["data"] = data.get_state()
    try:
        document = json.dumps(metadata)
    except TypeError as error:
        raise CheckpointError(f"save: the metadata is not JSON-serialisable ({error}); check `extra`") from None
    payload = st.save(arrays, metadata={METADATA_KEY: document})
    atomic_write(path, payload)
    return path


def _version() -> str:
    from . import __version__

    return __version__


def atomic_write(path: "str | os.PathLike", payload: bytes) -> None:
    """Replace ``path`` with ``payload`` so that readers see the old file or the new one, never
    a mix: temp file in the same directory, fsync, ``os.replace``, fsync of the directory."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"save: {path} is a directory; give a file name")
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    mode = (path.stat().st_mode & 0o777) if path.exists() else _default_mode()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_chunks(handle, payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _write_chunks(handle: Any, payload: bytes) -> None:
    view = memoryview(payload)
    for start in range(0, len(view), _CHUNK):
        handle.write(view[start:start + _CHUNK])


def _default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def read(path: "str | os.PathLike") -> Checkpoint:
    """Parse a checkpoint file without applying it (clear errors for foreign or damaged files)."""
    st = _safetensors()
    path = Path(path)
    payload = path.read_bytes()
    name = str(path)
    if len(payload) < 8:
        raise CheckpointError(f"{name}: {len(payload)} bytes: truncated, or not a gradflow checkpoint")
    header_size = int.from_bytes(payload[:8], "little")
    if header_size > len(payload) - 8:
        if header_size > 100_000_000:
            raise CheckpointError(f"{name}: not a gradflow checkpoint (not a safetensors file)")
        raise CheckpointError(f"{name}: truncated: the header needs {header_size} bytes, the file has {len(payload) - 8}")
    try:
        header = json.loads(payload[8:8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{name}: not a gradflow checkpoint (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: not a gradflow checkpoint (not a safetensors file)")
    document = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if document is None:
        raise CheckpointError(f"{name}: a safetensors file without gradflow metadata: not a gradflow checkpoint")
    try:
        metadata = json.loads(document)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{name}: corrupt gradflow metadata ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a gradflow checkpoint (format {metadata.get('format')!r})")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: written by a newer gradflow (format version {metadata['format_version']}, this one reads "
            f"up to {FORMAT_VERSION}); upgrade gradflow"
        )
    if int(metadata.get("format_version", 0)) < FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: written by gradflow 0.1 (format version {metadata.get('format_version')}), which stored "
            "Linear weights as (in, out); this version stores PyTorch's (out, in) and will not guess: "
            "re-create the checkpoint with this version"
        )
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{name}: corrupt checkpoint (malformed safetensors header)") from None
    expected = 8 + header_size + (max(ends) if ends else 0)
    if len(payload) < expected:
        raise CheckpointError(f"{name}: truncated: {len(payload)} bytes, the header describes {expected}")
    try:
        arrays = st.load(payload)
    except Exception as error:  # safetensors raises its own error type
        raise CheckpointError(f"{name}: corrupt checkpoint ({error})") from None
    # safetensors does not keep the insertion order: restore the model's own key order
    order = {key: i for i, key in enumerate((metadata.get("model") or {}).get("keys", []))}
    model_keys = sorted((k[len("model/"):] for k in arrays if k.startswith("model/")),
                        key=lambda k: (order.get(k, len(order)), k))
    model_state = {k: arrays[f"model/{k}"] for k in model_keys}
    slot_keys = sorted((k[len("optimizer/"):] for k in arrays if k.startswith("optimizer/")),
                       key=lambda k: (int(k.partition(".")[0]) if k.partition(".")[0].isdigit() else -1, k))
    slots = {k: arrays[f"optimizer/{k}"] for k in slot_keys}
    history = History.from_dict(metadata["history"]) if metadata.get("history") else History()
    return Checkpoint(name, metadata, model_state, slots, history)


def load(
    path: "str | os.PathLike",
    model: Any = None,
    optimizer: Any = None,
    *,
    data: Any = None,
    callbacks: list[Any] | None = None,
    strict: bool = True,
    restore_rng: bool = True,
) -> Checkpoint:
    """Read ``path`` and restore what it holds into the objects given; returns the :class:`Checkpoint`.

    model: its parameters and buffers are replaced, on the model's own device and dtype (a
    checkpoint saved on one device loads on any other). A model of another architecture raises
    :class:`CheckpointError` listing the missing, unexpected and mis-shaped keys, and changes
    nothing. optimizer: slots, step counter, schedule state, and a constant lr. data: the
    shuffling state. callbacks: their saved states. ``restore_rng``: also the initializer's
    generator and the layers' generators.
    """
    checkpoint = read(path)
    meta = checkpoint.metadata
    if optimizer is not None:
        _check_optimizer(checkpoint, optimizer)
    if model is not None:
        try:
            model.load_state_dict(checkpoint.model_state, strict=strict)
        except ValueError as error:
            raise CheckpointError(f"{checkpoint.path}: {error}\n  saved architecture:\n"
                                  + _indent(checkpoint.architecture)) from None
    if optimizer is not None:
        saved = meta["optimizer"]
        optimizer.load_state_dict({"step": saved["step"], "slots": checkpoint.optimizer_slots})
        schedule = saved.get("schedule")
        if schedule is None:
            if optimizer.schedule is None and "lr" in saved["hyperparameters"]:
                optimizer.lr = saved["hyperparameters"]["lr"]
        elif schedule.get("state") and callable(getattr(optimizer.schedule, "load_state_dict", None)):
            optimizer.schedule.load_state_dict(schedule["state"])
    if data is not None and meta["rng"].get("data") is not None:
        data.set_state(meta["rng"]["data"])
    if callbacks:
        saved_callbacks = meta.get("callbacks") or {}
        for i, callback in enumerate(callbacks):
            key = callback_key(i, callback)
            if key in saved_callbacks:
                callback.load_state_dict(saved_callbacks[key])
    if restore_rng:
        if meta["rng"].get("init"):
            _set_init_generator_state(meta["rng"]["init"])
        if model is not None:
            for problem in set_layer_rng_states(model, meta["rng"].get("layers") or {}):
                warnings.warn(f"{checkpoint.path}: {problem}", RuntimeWarning, stacklevel=2)
    return checkpoint


def _check_optimizer(checkpoint: Checkpoint, optimizer: Any) -> None:
    saved = checkpoint.metadata.get("optimizer")
    name = type(optimizer).__name__
    if saved is None:
        raise CheckpointError(f"{checkpoint.path}: holds no optimizer state; load without an optimizer")
    if saved["class"] != name:
        raise CheckpointError(f"{checkpoint.path}: holds {saved['class']} state, not {name}'s")
    wrong = []
    for key, array in checkpoint.optimizer_slots.items():
        index, _, slot = key.partition(".")
        if not index.isdigit() or int(index) >= len(optimizer.params):
            wrong.append(f"slot {key!r} names parameter {index}, the optimizer has {len(optimizer.params)}")
        elif tuple(array.shape) != optimizer.params[int(index)].shape:
            wrong.append(f"slot {key!r}: saved {tuple(array.shape)} vs parameter {optimizer.params[int(index)].shape}")
    if wrong:
        raise CheckpointError(f"{checkpoint.path}: the optimizer state does not fit:\n  " + "\n  ".join(wrong))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


__all__ = ["save", "load", "read", "Checkpoint", "CheckpointError", "atomic_write", "layer_rng_states",
           "set_layer_rng_states"]
