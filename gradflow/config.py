"""Architectures as declarative configs (JSON, never pickle): save a model's structure beside its
weights and rebuild it without the code that built it.

    gf.save(model, "run.safetensors", architecture=True)
    model = gf.load_model("run.safetensors")          # same classes, arguments and weights

A config is ``{"class": "Linear", "args": [64, 128], "kwargs": {"rng": 0}}``: the class's name in
the **registry** and the arguments its constructor was called with, recorded when the layer was
built. Layers passed as arguments (``Sequential(...)``'s, ``Residual``'s body) are nested configs.
Every layer and container gradflow exports is registered; register a layer of your own with
:func:`register` (as a decorator) before building it. Arguments that JSON cannot hold and that
only affect the initial weights (a ``numpy.random.Generator`` as ``rng``, a callable ``init``) are
dropped, since the weights come from the checkpoint; any other such argument makes
:func:`to_config` raise, naming the layer and the argument.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any

__all__ = ["register", "registered", "to_config", "from_config", "load_model", "ConfigError"]

_REGISTRY: dict[str, type] = {}
_ARGS = "_gradflow_config_args"
# Arguments that only shape the initial weights: dropped when JSON cannot hold them.
_INIT_ONLY = ("rng", "init", "bias_init", "weight_init", "generator")


class ConfigError(ValueError):
    """A model whose architecture cannot be written as a config, or a config that does not build."""


def register(cls: type, name: str | None = None) -> type:
    """Record ``cls``'s constructor arguments on every instance and make it buildable by name.

    Args:
        cls: a :class:`gradflow.Layer` subclass.
        name: the name in configs (default: the class's ``__name__``); unique, except that a
            class defined again under the same module and qualified name replaces the old one.

    Returns:
        ``cls`` itself, so that ``@register`` works as a class decorator.
    """
    key = name or cls.__name__
    taken = _REGISTRY.get(key, cls)
    same_definition = (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__)
    if taken is not cls and not same_definition:  # a re-run definition (a notebook cell) replaces
        raise ConfigError(f"register: the name {key!r} is already taken by {_REGISTRY[key].__module__}.{key}")
    _REGISTRY[key] = cls
    own = cls.__dict__.get("__init__")
    if own is not None and getattr(own, "_gradflow_records", None) is cls:
        return cls
    original = cls.__init__  # its own, or the one it inherits

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if type(self) is cls:  # the outermost constructor records (not a subclass's super().__init__)
            object.__setattr__(self, _ARGS, (key, args, kwargs))

    __init__._gradflow_records = cls  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def registered() -> dict[str, type]:
    """The registry: config name -> class."""
    return dict(_REGISTRY)


def _encode(value: Any, where: str) -> Any:
    from .core import Layer

    if isinstance(value, Layer):
        return {"__layer__": to_config(value)}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(item, where) for item in value]
        return encoded if isinstance(value, list) else {"__tuple__": encoded}
    if isinstance(value, dict):
        return {str(k): _encode(v, where) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise _Unencodable(f"{where} is a {type(value).__name__}, which a JSON config cannot hold")


class _Unencodable(Exception):
    pass


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__layer__"}:
            return from_config(value["__layer__"])
        if set(value) == {"__tuple__"}:
            return tuple(_decode(item) for item in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def to_config(layer: Any) -> dict[str, Any]:
    """The config of ``layer`` (a registered class, built after gradflow was imported).

    Args:
        layer: the model or layer.

    Returns:
        A JSON-serialisable dict ``{"class", "args", "kwargs"}`` (nested for containers).

    Raises:
        ConfigError: the class is not registered, or an argument cannot be written as JSON.
    """
    recorded = getattr(layer, _ARGS, None)
    name = type(layer).__name__
    if recorded is None or recorded[0] not in _REGISTRY or type(layer) is not _REGISTRY[recorded[0]]:
        raise ConfigError(f"to_config: {name} is not registered; decorate the class with "
                          "@gradflow.config.register before building it")
    key, args, kwargs = recorded
    parameters = inspect.signature(type(layer).__init__).parameters
    names = [p for p in parameters if p != "self"]
    encoded_args = []
    for index, value in enumerate(args):
        argument = names[index] if index < len(names) else f"argument {index}"
        try:
            encoded_args.append(_encode(value, f"{name}: {argument}"))
        except _Unencodable as error:
            if argument in _INIT_ONLY:
                encoded_args.append(None)
                continue
            raise ConfigError(f"to_config: {error}") from None
    encoded_kwargs = {}
    for argument, value in kwargs.items():
        try:
            encoded_kwargs[argument] = _encode(value, f"{name}: {argument}")
        except _Unencodable as error:
            if argument in _INIT_ONLY:
                continue
            raise ConfigError(f"to_config: {error}") from None
    return {"class": key, "args": encoded_args, "kwargs": encoded_kwargs}


def from_config(config: "dict[str, Any] | str") -> Any:
    """Build the layer a config describes (fresh weights: load a state dict into it for trained ones).

    Args:
        config: a dict from :func:`to_config`, or its JSON text.

    Raises:
        ConfigError: an unknown class name, or arguments its constructor refuses.
    """
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, dict) or "class" not in config:
        raise ConfigError(f"from_config: expected a dict with 'class', 'args', 'kwargs', got {config!r:.80}")
    cls = _REGISTRY.get(config["class"])
    if cls is None:
        raise ConfigError(f"from_config: unknown layer class {config['class']!r}; registered: "
                          f"{', '.join(sorted(_REGISTRY))} (register your own with gradflow.config.register)")
    args = [_decode(value) for value in config.get("args", [])]
    kwargs = {key: _decode(value) for key, value in (config.get("kwargs") or {}).items()}
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"from_config: {config['class']}(...) refused its saved arguments: {error}") from None


def load_model(path: Any, device: Any = None) -> Any:
    """Rebuild the model saved with ``gradflow.save(model, path, architecture=True)`` and load its weights.

    Args:
        path: the checkpoint file.
        device: where to put the model (a :class:`gradflow.Device` or a name such as ``"cuda"``);
            default: the CPU.

    Returns:
        The model, in the dtype it was saved in, in evaluation mode.

    Raises:
        ConfigError: the checkpoint holds no architecture (saved without ``architecture=True``).
    """
    from . import backend
    from .checkpoint import load, read

    checkpoint = read(path)
    config = checkpoint.metadata.get("architecture")
    if not config:
        raise ConfigError(f"load_model: {checkpoint.path} holds weights but no architecture; save it with "
                          "gradflow.save(model, path, architecture=True), or build the model and call "
                          "gradflow.load(path, model)")
    model = from_config(config["config"])
    dtype = config.get("dtype")
    model.to(backend.device(device) if device is not None else None, dtype=dtype)
    load(path, model, restore_rng=False)
    model.eval()
    return model


def architecture_metadata(model: Any) -> dict[str, Any]:
    """What ``gradflow.save(..., architecture=True)`` stores: the config and the parameters' dtype.

    Args:
        model: the model to describe.
    """
    from . import backend

    dtype = model.dtype
    return {"config": to_config(model), "dtype": backend.dtype_name(dtype) if dtype is not None else None}


def _register_builtins() -> None:
    from . import containers, layers
    from .core import Layer

    for name in getattr(layers, "__all__", []):
        value = getattr(layers, name, None)
        if isinstance(value, type) and issubclass(value, Layer):
            register(value)
    for container in (containers.Sequential, containers.Residual, containers.Concat):
        register(container)


_register_builtins()
