"""The benchmark suite runs end to end with tiny settings, its contenders compute the same thing,
and its GPU and slot dispatch behave without a GPU. No timing is asserted here: the targets are
judged in the benchmark's own output."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from benchmarks import mlp_step, report, run

TINY = (20, 12, 12, 5)


def test_quick_run_writes_json_markdown_and_chart_stating_the_command(tmp_path):
    assert run.main(["--quick", "--out", str(tmp_path), "--no-openblas-rerun"]) == 0
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    text = (tmp_path / "benchmarks.md").read_text()
    command = f"python -m benchmarks --quick --out {tmp_path} --no-openblas-rerun"
    assert results["command"] == command and f"`{command}`" in text
    assert (tmp_path / "benchmarks.png").stat().st_size > 1000
    cpu = results["mlp"]["cpu"]["batches"]["8"]
    assert set(cpu["ms"]) >= {"gradflow", "numpy", "gemm_only"}
    assert cpu["ratios"]["gradflow/numpy"] > 0 and cpu["peak_memory_bytes"]["gradflow"] > 0
    assert results["operations"]["gradflow"]["float64_results"] == []
    assert {row["target"].split(":")[0] for row in results["targets"]} >= {"MLP step batch 8"}
    assert "## Targets" in text and "## Array operations per training step" in text
    assert set(results["slots"]) == {"cnn", "sequence"}
    # fair timing: every MLP contender was also timed alone in a process of its own
    assert set(cpu["solo_ms"]) == set(cpu["ms"]), cpu.get("solo")
    assert set(cpu["solo_ratios"]) >= {"gradflow/numpy"} and isinstance(cpu["flagged"], list)
    assert cpu["minor_faults_per_step"]["gradflow"] >= 0
    assert "(solo)" in text and results["settings"]["pause"] > 0
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        assert name in results["environment"]["openblas_variables"]


@pytest.mark.parametrize("optimizer", mlp_step.OPTIMIZERS)
def test_gradflow_numpy_and_torch_steps_reach_the_same_parameters(optimizer):
    found = run.agreement(optimizer, TINY, batch=8, steps=3)
    assert found["numpy"] < 1e-5, found
    if "torch" in found:
        assert found["torch"] < 1e-5, found


def test_gpu_dispatch_adds_cupy_and_torch_cuda_contenders():
    assert run.available_devices("auto", cuda_count=0) == ["cpu"]
    assert run.available_devices("auto", cuda_count=2) == ["cpu", "cuda"]
    with pytest.raises(SystemExit, match="sees no GPU"):
        run.available_devices("cuda", cuda_count=0)
    assert run.plan_contenders("cuda", torch_available=True, torch_cuda=True) == ["gradflow", "cupy", "torch"]
    assert run.plan_contenders("cuda", torch_available=True, torch_cuda=False) == ["gradflow", "cupy"]
    assert run.plan_contenders("cpu", torch_available=False, torch_cuda=False) == ["gradflow", "numpy", "gemm_only"]


def test_cupy_contender_is_the_hand_written_step_on_the_cupy_namespace(monkeypatch):
    # Stand NumPy in for CuPy: the contender must build the same hand-written step on it.
    monkeypatch.setattr(run, "_cupy", lambda: np)
    steps = run.build_mlp_contenders(["cupy"], 4, "sgd", "cpu", TINY)
    steps["cupy"]()
    assert all(p.dtype == np.float64 for p in steps["cupy"].parameters())


def test_slot_discovery_groups_builders_and_reports_missing_modules(monkeypatch):
    module = types.ModuleType("benchmarks.fake_steps")
    module.build_gradflow_lstm_step = lambda batch: (lambda: None)
    module.build_torch_lstm_step = lambda batch: (lambda: None)
    module.build_gradflow_step = lambda batch: (lambda: None)
    module.BATCHES = (4, 8)
    monkeypatch.setitem(sys.modules, "benchmarks.fake_steps", module)
    workloads, why, batches = run.discover_slot("benchmarks.fake_steps")
    assert why is None and batches == (4, 8)
    assert set(workloads) == {"lstm", "fake"} and set(workloads["lstm"]) == {"gradflow", "torch"}
    outcome = run.run_slot("benchmarks.fake_steps", rounds=1, block_seconds=0.001, quick=True)
    assert outcome["workloads"]["lstm (batch 4)"]["status"] == "ok"
    missing, why, _ = run.discover_slot("benchmarks.no_such_module")
    assert missing == {} and why.startswith("not available")


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    results = json.loads((run.RESULTS / "benchmarks.json").read_text()) if (run.RESULTS / "benchmarks.json").exists() else None
    if results is None:
        pytest.skip("no committed benchmark results to render")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{report.README_BEGIN}\nold table\n{report.README_END}\n\nafter\n")
    report.update_readme(readme, results)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore") and text.endswith("after\n")
    assert "gradflow / NumPy by hand" in text and results["command"] in text


def test_solo_child_times_a_contender_alone_with_the_thread_variables_set(tmp_path):
    from benchmarks import solo

    env = solo.child_environment(3)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    spec = {"kind": "mlp", "contender": "numpy", "batch": 4, "sizes": list(TINY)}
    times = solo.time_alone(spec, rounds=3, block_seconds=0.001)
    assert len(times) == 3 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="unknown contender kind"):
        solo.build({"kind": "nope"})
    failed = solo.run_solo({"kind": "slot", "module": "benchmarks.no_such_module", "workload": "x",
                            "contender": "gradflow", "batch": 1}, threads=1, rounds=1, block_seconds=0.001)
    assert failed["status"].startswith("failed") and "not available" in failed["status"]


def test_interleaved_times_more_than_15_percent_off_solo_are_flagged_and_fail_targets():
    from benchmarks.timing import flagged

    assert flagged(1.2, 1.0) and flagged(0.8, 1.0) and not flagged(1.1, 1.0) and not flagged(1.0, None)
    entry = {"ms": {"gradflow": 1.0, "torch": 1.1}, "ratios": {"gradflow/torch": 0.91}, "solo_ms": {},
             "solo_ratios": {"gradflow/torch": 1.02}, "flagged": ["torch"]}
    value, met = run._fair_ratio(entry, "gradflow/torch", 1.0, strict=True)
    assert not met and "1.020x solo" in value and "flagged: torch" in value
