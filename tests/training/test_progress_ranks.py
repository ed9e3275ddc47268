"""Progress under a parallel launcher: lines on rank 0, nothing elsewhere, never a bar."""

from __future__ import annotations

import io

import pytest

from gradflow import progress
from gradflow.progress import Progress, resolve_verbose


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def no_launcher(monkeypatch):
    for name in progress._RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_is_a_bar_on_a_terminal_without_a_launcher(no_launcher):
    assert resolve_verbose("auto", FakeTerminal()) == 1
    assert resolve_verbose("auto", io.StringIO()) == 2


@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"])
def test_under_a_launcher_rank_0_prints_lines_and_the_others_stay_silent(no_launcher, variable):
    no_launcher.setenv(variable, "0")
    assert resolve_verbose("auto", FakeTerminal()) == 2  # mpirun's pseudo-terminal: lines, not bar redraws
    no_launcher.setenv(variable, "1")
    assert resolve_verbose("auto", FakeTerminal()) == 0
    assert resolve_verbose(2, FakeTerminal()) == 2  # an explicit level is kept


def test_no_bar_under_a_launcher_even_on_a_terminal(no_launcher):
    pytest.importorskip("tqdm")
    assert Progress(1, stream=FakeTerminal()).uses_bar
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "0")
    assert not Progress(1, stream=FakeTerminal()).uses_bar
