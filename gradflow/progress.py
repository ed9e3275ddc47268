"""Progress display for ``fit``: a tqdm bar per epoch, or one line per epoch.

``verbose``: 0 silent; 1 a bar per epoch (tqdm, when installed and stdout is a terminal; else
one line per epoch); 2 one line per epoch; ``"auto"`` (the default) is 1 on a terminal and 2
otherwise, so logs and CI output get a line per epoch instead of bar redraws. Under a parallel
launcher (``mpirun``, ``srun``, ``torchrun``: a rank in the environment), ``"auto"`` is 2 on rank 0
and 0 on every other rank, and no bar is drawn even when the launcher forwards the output through
a pseudo-terminal (which turned every bar redraw into a blank line).

The bar shows the running mean loss and training metrics. Showing them needs their values on
the host: the bar fetches them (one transfer) at most every ``refresh_seconds``, never per step.
tqdm is optional: ``pip install 'gradflow-nn[progress]'``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from .callbacks import Callback, TrainingState
from .metrics import fetch


_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID", "RANK")


def launcher_rank() -> int | None:
    """This process's rank when a parallel launcher started it (from the environment), else None."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return None


def resolve_verbose(verbose: Any, stream: TextIO | None = None) -> int:
    """0, 1 or 2 from ``verbose``.

    Args:
        verbose: 0 (silent), 1 (a bar per epoch), 2 (one line per epoch), ``"auto"`` (a bar on a
            terminal, lines otherwise; under a launcher lines on rank 0 and silence elsewhere),
            ``True`` (same as ``"auto"``) or ``False`` (0).
        stream: where the display goes (default: ``sys.stdout``).
    """
    stream = sys.stdout if stream is None else stream
    if verbose == "auto" or verbose is True or verbose is None:
        rank = launcher_rank()
        if rank is not None:
            return 2 if rank == 0 else 0
        return 1 if _is_terminal(stream) else 2
    if verbose is False:
        return 0
    if isinstance(verbose, int) and verbose in (0, 1, 2):
        return verbose
    raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def format_logs(logs: dict[str, float]) -> str:
    """``"loss 0.1234  accuracy 0.9500  lr 0.001"``: the logs of an epoch as one line.

    Args:
        logs: name -> value.
    """
    parts = []
    for name, value in logs.items():
        parts.append(f"{name} {value:.3g}" if name == "lr" else f"{name} {value:.4f}")
    return "  ".join(parts)


class Progress(Callback):
    """The display ``fit`` adds for ``verbose`` 1 or 2 (see the module docstring).

    stream: where the display goes (default: sys.stdout). refresh_seconds: the least time between
    two bar updates (each fetches the running loss from the device). use_bar: force the tqdm bar on
    or off (default: on a terminal with tqdm installed and no parallel launcher).
    """

    def __init__(self, verbose: int, stream: TextIO | None = None, refresh_seconds: float = 0.5,
                 use_bar: bool | None = None):
        self.verbose = verbose
        self.stream = sys.stdout if stream is None else stream
        self.refresh_seconds = refresh_seconds
        tqdm = _tqdm() if verbose == 1 else None
        if use_bar is None:
            use_bar = tqdm is not None and _is_terminal(self.stream) and launcher_rank() is None
        self._tqdm = tqdm if use_bar else None
        self._bar: Any = None
        self._loss_sum: Any = None
        self._seen = 0
        self._started = 0.0
        self._last_refresh = 0.0

    @property
    def uses_bar(self) -> bool:
        """Whether a tqdm bar is drawn (else one line per epoch)."""
        return self._tqdm is not None

    def on_epoch_begin(self, state: TrainingState) -> None:
        """Start the epoch's clock (and its bar, with tqdm)."""
        self._started = self._last_refresh = time.perf_counter()
        self._loss_sum, self._seen = None, 0
        if self._tqdm is not None:
            self._bar = self._tqdm(total=state.steps_per_epoch, desc=f"epoch {state.epoch + 1}/{state.epochs}",
                                   file=self.stream, leave=True, unit="batch", dynamic_ncols=True)

    def on_batch_end(self, state: TrainingState, loss: Any) -> None:
        """Advance the bar; refresh the shown loss and metrics at most every ``refresh_seconds``."""
        if self._bar is None:
            return
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._seen += 1
        self._bar.update(1)
        now = time.perf_counter()
        if now - self._last_refresh >= self.refresh_seconds:
            self._last_refresh = now
            values = fetch(state.train_metrics, extra=[self._loss_sum])
            shown = {"loss": values.pop("extra")[0] / self._seen}
            shown.update(values)
            self._bar.set_postfix_str(format_logs(shown), refresh=True)

    def on_epoch_end(self, state: TrainingState, logs: dict[str, float]) -> None:
        """Close the bar with the epoch's logs (without tqdm: print one line)."""
        elapsed = time.perf_counter() - self._started
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs), refresh=True)
            self._bar.close()
            self._bar = None
            return
        line = f"epoch {state.epoch + 1}/{state.epochs}  {format_logs(logs)}  ({elapsed:.2f}s)"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Close an open bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, state: TrainingState) -> None:
        """Close the bar and print why training stopped early, if it did."""
        self.close()
        if state.stop_reason:
            print(f"stopped early: {state.stop_reason}", file=self.stream, flush=True)


__all__ = ["Progress", "resolve_verbose", "format_logs"]
