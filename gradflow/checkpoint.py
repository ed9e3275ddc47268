"""Checkpoints: ``gradflow.save`` / ``gradflow.load``. safetensors for arrays, JSON for the rest,
no pickle anywhere.

    gf.save(model, "run.safetensors", optimizer, epoch=3, data=batches)   # torch.save's order
    ckpt = gf.load("run.safetensors", model, optimizer, data=batches)   # ckpt.epoch == 3
    gf.save(model, "model.safetensors", architecture=True)              # structure too, as JSON
    model = gf.load_model("model.safetensors")                          # no model-building code needed

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
it still can), so nothing already saved is lost to a failed save. The temporary file's name
holds the writer's process id; the next save to the same path removes the ones whose process
is gone (a save killed with SIGKILL cannot clean up after itself).

Integrity (format versions 2 and 3): the metadata holds a SHA-256 digest of every array (name, dtype,
shape and bytes), and the header holds one of the metadata document itself, so a flipped bit
anywhere in the arrays or the metadata is found when the file is read. ``load`` then checks
everything (digests, metadata types, keys, shapes, optimizer slot names, RNG generator names
and states) before it assigns anything, and if applying still fails, restores what it had
changed: an error leaves the model, optimizer, data iterator, callbacks and RNGs as they were.
Files of format version 1 (no digests, Linear weights (in, out)) are refused: this version
stores PyTorch's layouts and will not guess a square matrix's orientation.

Format 2 files (written before format 3; recurrent weights stored transposed, as (in, G·H),
(H, G·H), (H, proj)) are migrated, because nothing the user saved is lost: ``read`` verifies
the digests of the arrays as stored, then transposes the model arrays whose keys name recurrent
weights (``weight_ih*``, ``weight_hh*``, ``weight_hr*``; every other array kept its layout) and
sets ``checkpoint.migrated_from = 2``. ``load`` then checks that every transposed weight fits the
model (a stored shape that is not the model's transposed is refused, naming the key, the shape
expected and the one found, before anything changes), transposes the optimizer slots of those
weights (slot ``<i>.<name>`` belongs to ``optimizer.params[i]``, matched to its model key by
identity; only a 2-D slot of the weight's stored shape), and warns once. Saving always writes
the current format.
"""

from __future__ import annotations

import copy
import datetime as _datetime
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backend
from .callbacks import History, callback_key
from .validation import state_mismatch_message, state_mismatches

FORMAT = "gradflow-checkpoint"
# 2: Linear weights are stored (out_features, in_features) as in PyTorch; version 1 stored them
# (in, out), and a square one would load transposed without a word, so version 1 is refused.
# Version 2 also holds SHA-256 digests of every array and of the metadata.
# 3: RNN/LSTM/GRU and their cells store weight_ih (G·H, in), weight_hh (G·H, H or proj) and
# weight_hr (proj, H) as in PyTorch; version 2 stored them transposed, and a square one (an RNN
# with input_size == hidden_size) would load transposed without a word if read as format 3.
# Version 2 files are migrated by key name (see the module docstring); version 1 is refused.
FORMAT_VERSION = 3
METADATA_KEY = "gradflow"
DIGEST_KEY = "gradflow_sha256"  # header entry: SHA-256 of the metadata document
# The NumPy bit generators a checkpoint may name (gf.load never calls any other numpy.random name).
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
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
    # a format 2 file read by this version: 2, and {model key: shape as stored} of the recurrent
    # weights transposed to PyTorch's layout (their optimizer slots are transposed by ``load``,
    # which knows the optimizer's parameters); None for a file of the current format
    migrated_from: int | None = None
    migrated_keys: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def epoch(self) -> int | None:
        """The number of epochs done when saved (None if not given)."""
        return self.metadata.get("epoch")

    @property
    def step(self) -> int | None:
        """The number of optimizer steps done when saved (None if not given)."""
        return self.metadata.get("step")

    @property
    def extra(self) -> dict[str, Any]:
        """The user's ``extra`` metadata (an empty dict if none)."""
        return self.metadata.get("extra") or {}

    @property
    def architecture(self) -> str:
        """The saved model's architecture (its repr)."""
        return self.metadata["model"]["architecture"]


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as error:
        raise ImportError("gradflow checkpoints need safetensors: pip install 'gradflow-nn[io]'") from error
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


def _generator_from_state(state: Any, what: str) -> np.random.Generator:
    """A new generator in ``state``; only the known bit generators are accepted."""
    if not isinstance(state, dict) or state.get("bit_generator") not in BIT_GENERATORS:
        name = state.get("bit_generator") if isinstance(state, dict) else state
        raise CheckpointError(f"{what}: bit_generator must be one of {BIT_GENERATORS}, got {name!r}")
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    try:
        generator.bit_generator.state = state
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise CheckpointError(f"{what}: not a valid {state['bit_generator']} state ({error})") from None
    return generator


def _set_init_generator_state(state: dict[str, Any]) -> None:
    from . import init

    init._default_generator = _generator_from_state(state, "the initializer's RNG state")


# --------------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------------


def _host(array: Any, what: str) -> np.ndarray:
    host = np.asarray(backend.to_numpy(array), order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
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
            "step": int(optimizer.step_count), "param_steps": optimizer.state_dict().get("param_steps"),
            "group_lrs": optimizer.state_dict().get("group_lrs"),
            "schedule": described}


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
    architecture: bool = False,
) -> Path:
    """Write a checkpoint of ``model`` (and ``optimizer``, ``data``'s shuffling state, the
    history and callback states when given) to ``path``, atomically. Returns the path.

    The first two arguments go in either order: ``save(model, path)`` (as ``torch.save(obj,
    path)``) or ``save(path, model)``; they are told apart by type (a path is a ``str`` or
    ``os.PathLike``, the model a :class:`gradflow.Layer`).

    Args:
        path: the file to write (its directory must exist); conventionally ``*.safetensors``.
        model: the model whose ``state_dict`` is saved.
        optimizer: its slots, step counter, hyper-parameters and schedule state are saved too.
        epoch: the number of finished epochs (``fit(resume=...)`` continues after it).
        step: the number of optimizer steps taken.
        data: a :class:`gradflow.data.BatchIterator` whose shuffling state is saved.
        history: a :class:`gradflow.callbacks.History` to save.
        callbacks: callbacks whose ``state_dict()`` is saved (restored by ``load(callbacks=...)``).
        extra: any JSON-serialisable dict of your own, returned as ``load(...).extra``.
        architecture: also save the model's structure as a JSON config (see
            :mod:`gradflow.config`), so that :func:`gradflow.load_model` rebuilds it.
    """
    if not isinstance(path, (str, os.PathLike)):
        if isinstance(model, (str, os.PathLike)):
            path, model = model, path  # save(model, path): torch.save's order
        else:
            raise TypeError(f"save: expected a model and a path (str or os.PathLike), got "
                            f"{type(path).__name__} and {type(model).__name__}")
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
    if architecture:
        from .config import architecture_metadata

        metadata["architecture"] = architecture_metadata(model)
    metadata["digests"] = {key: _digest(key, array) for key, array in arrays.items()}
    try:
        document = json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"save: the metadata is not JSON-serialisable ({error}); check `extra`") from None
    payload = st.save(arrays, metadata={METADATA_KEY: document, DIGEST_KEY: _text_digest(document)})
    atomic_write(path, payload)
    return path


def _digest(key: str, array: np.ndarray) -> str:
    """SHA-256 of an array's name, dtype, shape and bytes (what a flipped bit could change)."""
    digest = hashlib.sha256(f"{key}|{array.dtype.str}|{tuple(array.shape)}|".encode())
    digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    remove_stale_temporaries(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=directory)
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


def remove_stale_temporaries(path: "str | os.PathLike") -> list[Path]:
    """Remove the temporary files of saves to ``path`` whose process no longer runs (a save killed
    with SIGKILL leaves one behind); a save in progress in a live process is left alone. Returns
    the files removed. ``atomic_write`` calls this before every save."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    removed = []
    prefix = f".{path.name}."
    try:
        candidates = [entry for entry in directory.iterdir()
                      if entry.name.startswith(prefix) and entry.name.endswith(".tmp")]
    except OSError:
        return removed
    for entry in candidates:
        pid_text = entry.name[len(prefix):].partition("-")[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's) or cannot tell: leave it
    return True


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
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise CheckpointError(f"{name}: not a gradflow checkpoint (format {found!r})")
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{name}: corrupt gradflow metadata (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: written by a newer gradflow (format version {metadata['format_version']}, this one reads "
            f"up to {FORMAT_VERSION}); upgrade gradflow"
        )
    if version < 2:
        raise CheckpointError(
            f"{name}: written by an older gradflow (format version {version}), which stored Linear weights as "
            f"(in, out); this version (format {FORMAT_VERSION}) stores PyTorch's layouts and will not guess: "
            "re-create the checkpoint with this version"
        )
    saved_digest = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if saved_digest != _text_digest(document):
        raise CheckpointError(f"{name}: corrupt checkpoint: the metadata does not match its SHA-256 digest")
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
    digests = metadata.get("digests")
    if not isinstance(digests, dict) or set(digests) != set(arrays):
        raise CheckpointError(f"{name}: corrupt checkpoint: the arrays do not match the list of digests")
    bad = [key for key, array in arrays.items() if digests[key] != _digest(key, array)]
    if bad:
        raise CheckpointError(f"{name}: corrupt checkpoint: {bad} do not match their SHA-256 digests")
    _check_metadata(metadata, name)
    # safetensors does not keep the insertion order: restore the model's own key order
    order = {key: i for i, key in enumerate((metadata.get("model") or {}).get("keys", []))}
    model_keys = sorted((k[len("model/"):] for k in arrays if k.startswith("model/")),
                        key=lambda k: (order.get(k, len(order)), k))
    model_state = {k: arrays[f"model/{k}"] for k in model_keys}
    slot_keys = sorted((k[len("optimizer/"):] for k in arrays if k.startswith("optimizer/")),
                       key=lambda k: (int(k.partition(".")[0]) if k.partition(".")[0].isdigit() else -1, k))
    slots = {k: arrays[f"optimizer/{k}"] for k in slot_keys}
    migrated = _migrate_model_state(model_state, name) if version == 2 else {}
    try:
        history = History.from_dict(metadata["history"]) if metadata.get("history") else History()
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{name}: corrupt gradflow metadata: history ({error})") from None
    checkpoint = Checkpoint(name, metadata, model_state, slots, history)
    if version == 2:
        checkpoint.migrated_from, checkpoint.migrated_keys = 2, migrated
    return checkpoint


# model keys whose arrays format 2 stored transposed: RNN/LSTM/GRU (weight_ih_l<k>[_reverse],
# weight_hh_l<k>[_reverse], weight_hr_l<k>[_reverse]) and their cells (weight_ih, weight_hh)
_RECURRENT_WEIGHT = re.compile(r"(?:^|\.)(?:weight_ih|weight_hh)(?:_l\d+(?:_reverse)?)?$|(?:^|\.)weight_hr_l\d+(?:_reverse)?$")
MIGRATION_WARNING = "format 2 checkpoint migrated: recurrent weights transposed to PyTorch's layout"


def _migrate_model_state(state: dict[str, np.ndarray], name: str) -> dict[str, tuple[int, ...]]:
    """Format 2 -> 3, in place (after the digests of the arrays as stored were verified):
    transpose the recurrent weights. Returns {model key: shape as stored} of those transposed."""
    migrated = {key: tuple(array.shape) for key, array in state.items() if _RECURRENT_WEIGHT.search(key)}
    flat = [f"{key} {shape}" for key, shape in migrated.items() if len(shape) != 2]
    if flat:
        raise CheckpointError(f"{name}: format 2 checkpoint: recurrent weights must be 2-D matrices, got {flat}")
    for key in migrated:
        state[key] = np.ascontiguousarray(state[key].T)
    return migrated


def _check_migration(checkpoint: Checkpoint, model: Any, optimizer: Any) -> None:
    """A format 2 checkpoint: every transposed weight fits the model (its stored shape is the
    model's, transposed), and the optimizer's slots can be matched to their parameters."""
    if model is None:
        if optimizer is not None and checkpoint.migrated_keys:
            raise CheckpointError(f"{checkpoint.path}: format 2 checkpoint with recurrent weights: pass the model "
                                  "too, so that their optimizer slots are transposed to PyTorch's layout")
        return
    targets = model.state_dict()
    wrong = [f"{key!r}: expected {tuple(targets[key].shape)[::-1]} (format 2 stored {tuple(targets[key].shape)} "
             f"transposed), got {stored}"
             for key, stored in checkpoint.migrated_keys.items()
             if key in targets and tuple(targets[key].shape)[::-1] != stored]
    if wrong:
        raise CheckpointError(f"{checkpoint.path}: format 2 checkpoint: recurrent weights fit neither layout:\n  "
                              + "\n  ".join(wrong))


def _migrate_slots(checkpoint: Checkpoint, model: Any, optimizer: Any) -> dict[str, np.ndarray]:
    """The optimizer slots of a format 2 checkpoint in format 3's layout: slot ``i.<name>``
    belongs to ``optimizer.params[i]``; a slot of a transposed weight, 2-D and of the weight's
    stored shape, is transposed too. Everything else is returned as stored."""
    names = {id(p): key for key, p in model.named_parameters()}
    slots = dict(checkpoint.optimizer_slots)
    for key, array in slots.items():
        index = key.partition(".")[0]
        if not index.isdigit() or int(index) >= len(optimizer.params):
            continue  # _check_optimizer names it
        stored = checkpoint.migrated_keys.get(names.get(id(optimizer.params[int(index)])))
        if stored is not None and array.ndim == 2 and tuple(array.shape) == stored:
            slots[key] = np.ascontiguousarray(array.T)
    return slots


def _check_metadata(meta: dict[str, Any], name: str) -> None:
    """Every field ``load`` reads has the type it needs (a clear CheckpointError, not a KeyError
    half-way through restoring)."""
    def fail(field: str, expected: str, value: Any) -> None:
        raise CheckpointError(f"{name}: corrupt gradflow metadata: {field} must be {expected}, got {value!r}")

    def count(field: str, value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            fail(field, "a non-negative int or null", value)

    count("epoch", meta.get("epoch"))
    count("step", meta.get("step"))
    model = meta.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("keys", []), list) \
            or not isinstance(model.get("architecture", ""), str):
        fail("model", "an object with a 'keys' list and an 'architecture' string", model)
    optimizer = meta.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("class"), str):
            fail("optimizer", "null or an object with a 'class' name", optimizer)
        step = optimizer.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            fail("optimizer.step", "a non-negative int", step)
        if not isinstance(optimizer.get("hyperparameters"), dict):
            fail("optimizer.hyperparameters", "an object", optimizer.get("hyperparameters"))
        lr = optimizer["hyperparameters"].get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))):
            fail("optimizer.hyperparameters.lr", "a number", lr)
        schedule = optimizer.get("schedule")
        if schedule is not None and (not isinstance(schedule, dict)
                                     or not isinstance(schedule.get("state") or {}, dict)):
            fail("optimizer.schedule", "null or an object with a 'state' object", schedule)
    rng = meta.get("rng")
    if not isinstance(rng, dict):
        fail("rng", "an object", rng)
    if rng.get("init") is not None:
        _generator_from_state(rng["init"], f"{name}: rng.init")
    if isinstance(rng.get("data"), dict) and "bit_generator" in rng["data"]:  # a BatchIterator's
        _generator_from_state(rng["data"], f"{name}: rng.data")
    layers = rng.get("layers")
    if layers is not None and (not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values())):
        fail("rng.layers", "an object of objects", layers)
    for key in ("callbacks", "extra"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            fail(key, "an object", meta[key])
    if meta.get("history") is not None and not isinstance(meta["history"], dict):
        fail("history", "an object", meta["history"])


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
    generator and the layers' generators. A format 2 file is migrated (recurrent weights and
    their optimizer slots transposed to PyTorch's layout) with a warning; an optimizer needs its
    model then, to tell which slots belong to recurrent weights.
    """
    checkpoint = read(path)  # parsed, digests verified, metadata types checked, format 2 migrated
    if checkpoint.migrated_from is not None:
        _check_migration(checkpoint, model, optimizer)
        if optimizer is not None:
            checkpoint.optimizer_slots = _migrate_slots(checkpoint, model, optimizer)
    if optimizer is not None:
        _check_optimizer(checkpoint, optimizer)
    if model is not None:
        _check_model(checkpoint, model, strict)
    undo = _Snapshot(model, optimizer, data, callbacks, restore_rng)
    try:
        _apply(checkpoint, model, optimizer, data, callbacks, strict, restore_rng)
    except BaseException:
        undo.restore()
        raise
    if checkpoint.migrated_from is not None:
        warnings.warn(f"{checkpoint.path}: {MIGRATION_WARNING} (save it again to write format {FORMAT_VERSION})",
                      UserWarning, stacklevel=2)
    return checkpoint


def _check_model(checkpoint: Checkpoint, model: Any, strict: bool) -> None:
    """Keys and shapes (load_state_dict's own check, run on a stand-in so nothing is assigned)."""
    targets = model.state_dict()
    state = checkpoint.model_state
    message = state_mismatch_message(f"{type(model).__name__}.load_state_dict: the state does not fit the model",
                                     *state_mismatches(targets, state), strict=strict)
    if message:
        raise CheckpointError(f"{checkpoint.path}: {message}\n  saved architecture:\n" + _indent(checkpoint.architecture))
    floating = [k for k, v in state.items() if k in targets and backend.is_floating(targets[k].dtype)
                and v.dtype.kind not in "f"]
    if floating:
        raise CheckpointError(f"{checkpoint.path}: {floating} hold non-floating arrays for floating parameters")


class _Snapshot:
    """What ``load`` may change, taken before it changes anything, so a failure can put it back."""

    def __init__(self, model: Any, optimizer: Any, data: Any, callbacks: list[Any] | None, rng: bool):
        from . import init

        self.model = model
        self.values: list[tuple[Any, Any]] = []
        if model is not None:
            self.values = [(item, item.value) for _, item in model.named_parameters()]
            self.values += [(item, item.value) for _, item in model.named_buffers()]
        self.optimizer = optimizer
        if optimizer is not None:
            self.slots = [dict(p.state) for p in optimizer.params]
            self.optimizer_vars = dict(vars(optimizer))
            schedule = getattr(optimizer, "schedule", None)
            self.schedule = copy.deepcopy(vars(schedule)) if schedule is not None and hasattr(schedule, "__dict__") else None
        self.data = data
        self.data_state = copy.deepcopy(data.get_state()) if data is not None else None
        self.callbacks = [(cb, copy.deepcopy(vars(cb))) for cb in callbacks or []]
        self.init_generator = init._default_generator if rng else None
        self.layer_rngs = layer_rng_states(model) if rng and model is not None else None

    def restore(self) -> None:
        from . import init

        for item, value in self.values:
            item.value = value
        if self.optimizer is not None:
            for p, slots in zip(self.optimizer.params, self.slots):
                p.state.clear()
                p.state.update(slots)
            vars(self.optimizer).clear()
            vars(self.optimizer).update(self.optimizer_vars)
            schedule = getattr(self.optimizer, "schedule", None)
            if self.schedule is not None:
                vars(schedule).clear()
                vars(schedule).update(self.schedule)
        if self.data is not None:
            self.data.set_state(self.data_state)
        for callback, saved in self.callbacks:
            vars(callback).clear()
            vars(callback).update(saved)
        if self.init_generator is not None:
            init._default_generator = self.init_generator
        if self.layer_rngs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                set_layer_rng_states(self.model, self.layer_rngs)


def _apply(checkpoint: Checkpoint, model: Any, optimizer: Any, data: Any, callbacks: list[Any] | None,
           strict: bool, restore_rng: bool) -> None:
    meta = checkpoint.metadata
    if model is not None:
        try:
            model.load_state_dict(checkpoint.model_state, strict=strict)
        except ValueError as error:
            raise CheckpointError(f"{checkpoint.path}: {error}\n  saved architecture:\n"
                                  + _indent(checkpoint.architecture)) from None
    if optimizer is not None:
        saved = meta["optimizer"]
        optimizer.load_state_dict(_optimizer_state(checkpoint))
        schedule = saved.get("schedule")
        if schedule is None:
            # files from before group_lrs: restore the one constant lr (group_lrs did it otherwise)
            if saved.get("group_lrs") is None and optimizer.schedule is None and "lr" in saved["hyperparameters"]:
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
                warnings.warn(f"{checkpoint.path}: {problem}", RuntimeWarning, stacklevel=3)


def _check_optimizer(checkpoint: Checkpoint, optimizer: Any) -> None:
    saved = checkpoint.metadata.get("optimizer")
    name = type(optimizer).__name__
    if saved is None:
        raise CheckpointError(f"{checkpoint.path}: holds no optimizer state; load without an optimizer")
    if saved["class"] != name:
        raise CheckpointError(f"{checkpoint.path}: holds {saved['class']} state, not {name}'s")
    wrong = []
    known = _slot_names(optimizer)
    for key, array in checkpoint.optimizer_slots.items():
        index, _, slot = key.partition(".")
        if not index.isdigit() or int(index) >= len(optimizer.params):
            wrong.append(f"slot {key!r} names parameter {index}, the optimizer has {len(optimizer.params)}")
        elif known is not None and slot not in known:
            wrong.append(f"slot {key!r}: {name} has no slot {slot!r} (its slots: {sorted(known)})")
        elif tuple(array.shape) != optimizer.params[int(index)].shape:
            wrong.append(f"slot {key!r}: saved {tuple(array.shape)} vs parameter {optimizer.params[int(index)].shape}")
        elif array.dtype.kind != "f":
            wrong.append(f"slot {key!r}: saved dtype {array.dtype}, slots are floating-point")
    if wrong:
        raise CheckpointError(f"{checkpoint.path}: the optimizer state does not fit:\n  " + "\n  ".join(wrong))
    check = getattr(optimizer, "check_state_dict", None)
    if callable(check):  # step counts, slot names, dtypes: everything, before the model changes
        try:
            check(_optimizer_state(checkpoint))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{checkpoint.path}: the optimizer state does not fit: {error}") from None


def _optimizer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimizer's ``load_state_dict`` argument from a checkpoint (``param_steps`` only when
    saved: files from before per-parameter step counts have none)."""
    saved = checkpoint.metadata["optimizer"]
    state = {"step": saved.get("step"), "slots": checkpoint.optimizer_slots}
    for key in ("param_steps", "group_lrs"):
        if saved.get(key) is not None:
            state[key] = saved[key]
    return state


def _slot_names(optimizer: Any) -> set[str] | None:
    """The slot names ``optimizer`` uses: its ``slot_names`` when it declares them, else those one
    update of a throw-away one-element parameter creates (None when that cannot be done)."""
    declared = getattr(optimizer, "slot_names", None)
    if declared is not None:
        return set(declared() if callable(declared) else declared)
    from .core import Parameter

    params = getattr(optimizer, "params", None)
    update = getattr(optimizer, "_update", None)
    if not params or not callable(update):
        return None
    first = params[0].value
    xp = backend.namespace(first)
    probe = Parameter(xp.zeros((1,), dtype=first.dtype, device=first.device))
    twin = copy.copy(optimizer)
    twin.params = [probe]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            type(optimizer)._update(twin, probe, xp.ones_like(probe.value), 0.0, xp)
    except Exception:  # an optimizer that cannot be probed this way: slot names unchecked
        return None
    return set(probe.state)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


__all__ = ["save", "load", "read", "Checkpoint", "CheckpointError", "atomic_write", "layer_rng_states",
           "set_layer_rng_states", "remove_stale_temporaries"]
