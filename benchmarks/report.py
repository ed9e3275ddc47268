"""Write benchmark results as JSON, a markdown report and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NAMES = {"gradflow": "gradflow", "numpy": "NumPy by hand", "cupy": "CuPy by hand", "torch": "PyTorch eager",
         "gemm_only": "GEMMs only"}
README_BEGIN = "<!-- benchmarks:begin (written by python -m benchmarks --update-readme README.md) -->"
README_END = "<!-- benchmarks:end -->"


def write(results: dict[str, Any], folder: Path, png: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "benchmarks.json", folder / "benchmarks.md"]
    paths[0].write_text(json.dumps(results, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(results))
    if png:
        chart = folder / "benchmarks.png"
        if write_chart(results, chart):
            paths.append(chart)
    return paths


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _optimizer_name(settings: dict[str, Any]) -> str:
    return "SGD, momentum 0.9" if settings["optimizer"] == "sgd" else "Adam"


def mlp_table(results: dict[str, Any], device: str = "cpu", section: dict[str, Any] | None = None) -> str:
    section = section or results["mlp"][device]
    names = section["contenders"]
    baseline = "numpy" if device == "cpu" else "cupy"
    with_solo = any("solo_ms" in e for e in section["batches"].values())
    header = ["batch"] + [f"{NAMES[n]} ms" + (" (solo)" if with_solo else "") for n in names]
    header.append(f"gradflow / {NAMES[baseline]}" + (" (solo)" if with_solo else ""))
    if "torch" in names:
        header.append("gradflow / PyTorch" + (" (solo)" if with_solo else ""))
    with_memory = any("peak_memory_bytes" in e for e in section["batches"].values())
    if with_memory:
        header.append("peak MiB, gradflow / NumPy")
    with_faults = any("minor_faults_per_step" in e for e in section["batches"].values())
    if with_faults:
        header.append("minor page faults per step, " + " / ".join(NAMES[n] for n in names if n != "gemm_only"))
    rows = []
    for batch, entry in section["batches"].items():
        ratios = entry["ratios"]
        spread = entry.get("ratio_iqr", {})
        solo_ms, solo_ratios, flags = entry.get("solo_ms", {}), entry.get("solo_ratios", {}), entry.get("flagged", [])

        def ratio(key: str) -> str:
            low_high = spread.get(key)
            text = f"**{ratios[key]:.3f}x**"
            text += f" ({low_high[0]:.2f}-{low_high[1]:.2f})" if low_high else ""
            return text + (f"; solo **{solo_ratios[key]:.3f}x**" if key in solo_ratios else "")

        def time(name: str) -> str:
            text = f"{entry['ms'][name]:.2f}"
            if name in solo_ms:
                text += f" ({solo_ms[name]:.2f})"
            elif with_solo:
                text += " (solo failed)"
            return text + (" ⚠" if name in flags else "")

        row = [batch] + [time(n) for n in names] + [ratio(f"gradflow/{baseline}")]
        if "torch" in names:
            row.append(ratio("gradflow/torch"))
        if with_memory:
            memory = entry.get("peak_memory_bytes", {})
            row.append(" / ".join(f"{memory[n] / 2**20:.2f}" for n in ("gradflow", "numpy") if n in memory))
        if with_faults:
            faults = entry.get("minor_faults_per_step", {})
            alone = {n: o.get("minor_faults_per_step") for n, o in entry.get("solo", {}).items()}
            row.append(" / ".join(f"{faults[n]:.0f}" + (f" ({alone[n]:.0f})" if alone.get(n) is not None else "")
                                  for n in names if n != "gemm_only" and n in faults))
        rows.append(row)
    table = _table(header, rows)
    if with_solo:
        table += ("\n\nEach time is interleaved (pause before every block) and, in brackets, the same contender "
                  "timed alone in its own process with the same thread count; ⚠ marks an interleaved time more "
                  "than 15% off the solo one (the interleaved figure is then not trustworthy). Minor page faults "
                  "per step: in the interleaved process (in brackets: in the solo process, which starts fresh; "
                  "a step that frees and reallocates large temporaries faults on each of their pages).")
    return table


def targets_table(results: dict[str, Any]) -> str:
    table = _table(["target", "measured", "met"],
                   [[row["target"], row["value"], "yes" if row["met"] else "**no**"] for row in results["targets"]])
    notes = [f"- {row['target']}: {row['why']}" for row in results["targets"] if row.get("why")]
    return table + ("\n\nWhy a target is missed:\n\n" + "\n".join(notes) if notes else "")


def _summary_line(results: dict[str, Any]) -> str:
    env = results["environment"]
    blas = env.get("blas") or []
    blas_text = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" for b in blas
                          if b.get("internal_api") == "openblas") or "unknown BLAS"
    variables = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in env["openblas_variables"].items())
    libraries = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    return (f"{env['cpu']}, {env['cores']} cores, {env['threads']} threads per contender; {libraries}; "
            f"{blas_text}; {variables}; load average {env.get('load_average_start')} at start, "
            f"{env.get('load_average_end')} at end.")


def load_warning(results: dict[str, Any]) -> str | None:
    """A warning when other processes competed for the cores (the load average exceeded them)."""
    env = results["environment"]
    loads = [l[0] for l in (env.get("load_average_start"), env.get("load_average_end")) if l]
    cores = env.get("cores") or 1
    if loads and max(loads) > cores:
        return (f"**Warning:** the 1-minute load average reached {max(loads):.1f} on {cores} cores: other "
                "processes competed for the CPU, so absolute times are inflated and ratios are noisier "
                "(interleaving keeps them comparable, not exact). Rerun on an idle machine for reference numbers.")
    return None


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    sizes = "-".join(map(str, settings["sizes"]))
    warning = load_warning(results)
    parts = [
        "# gradflow benchmarks",
        "",
        f"Made by `{results['command']}` on {results['date']} in {results['seconds']:.0f} s.",
        "",
        _summary_line(results),
        "",
    ] + ([warning, ""] if warning else [])
    parts += [
        f"## MLP {sizes} training step (float32, softmax cross-entropy, {_optimizer_name(settings)})",
        "",
        "Forward + backward + update on a fixed batch, all contenders from the same weights in one process, "
        f"interleaved in {settings['rounds']} rounds with {settings.get('pause', 0):.2f} s idle before every "
        "block (so that no library's spinning BLAS/OpenMP threads are charged to the next contender); "
        "times are medians over rounds, ratios the median of the "
        "per-round ratios (in brackets: their interquartile range over rounds). "
        + ("Each contender is also timed alone in a child process of its own (benchmarks/solo.py) with the "
           "same thread count: the solo figures. " if settings.get("solo") else "") +
        "\"NumPy by hand\" is the same maths written directly (benchmarks/mlp_step.py); "
        "\"GEMMs only\" is the step's eight matrix products alone (timed as a contender of its own; "
        "measured apart on a quiet moment they were ~85% of the hand-written step at batch 256).",
        "",
    ]
    for device, section in results["mlp"].items():
        parts += [f"### {device.upper()}", "", mlp_table(results, device), ""]
    agreement = results.get("agreement") or {}
    if agreement:
        parts += ["Sanity check: after 3 steps the parameters differ from gradflow's by at most "
                  + ", ".join(f"{v:.1e} ({NAMES.get(k, k)})" for k, v in agreement.items())
                  + " relative to the largest weight.", ""]
    unset = results.get("openblas_unset")
    if isinstance(unset, dict):
        parts += ["### CPU with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (child process)", "",
                  mlp_table(unset, "cpu", unset["mlp"]["cpu"]), ""]
    elif isinstance(unset, str):
        parts += [f"Re-run with the OpenBLAS variables unset: {unset}", ""]
    parts += ["## Targets", "", targets_table(results), ""]
    parts += _slots_section(results)
    parts += _operations_section(results)
    parts += _fused_section(results)
    parts += _mixed_section(results)
    parts += _overhead_section(results)
    parts += _memory_section(results)
    parts += _profile_section(results)
    return "\n".join(parts) + "\n"


def _slots_section(results: dict[str, Any]) -> list[str]:
    parts = ["## CNN and sequence models", ""]
    rows = []
    for slot, outcome in results["slots"].items():
        if outcome["status"] != "ok":
            rows.append([slot, "", outcome["status"], "", ""])
            continue
        for workload, entry in outcome["workloads"].items():
            if entry["status"] != "ok":
                rows.append([slot, workload, entry["status"], "", ""])
                continue
            solo_ms, solo_ratios = entry.get("solo_ms", {}), entry.get("solo_ratios", {})
            flags = entry.get("flagged", [])
            times = ", ".join(f"{NAMES.get(n, n)} {ms:.2f} ms" + (f" (solo {solo_ms[n]:.2f})" if n in solo_ms else "")
                              + (" ⚠" if n in flags else "") for n, ms in entry["ms"].items())

            def ratio(key: str) -> str:
                value = entry["ratios"].get(key)
                if value is None:
                    return ""
                return f"{value:.3f}x" + (f" (solo {solo_ratios[key]:.3f}x)" if key in solo_ratios else "")

            rows.append([slot, workload, times, ratio("gradflow/torch"), ratio("gradflow/numpy")])
    return parts + [_table(["slot", "workload", "step time (solo)", "gradflow / PyTorch", "gradflow / NumPy"], rows),
                    "", "⚠: interleaved time more than 15% off the solo time.", ""]


def _operations_section(results: dict[str, Any]) -> list[str]:
    ops = results["operations"]
    g, n = ops["gradflow"], ops["numpy"]
    rows = [
        ["array operations (kernel-launch proxy)", g["operations"], n["operations"]],
        ["host syncs (bool/float/int of an array)", g["syncs"], n["syncs"]],
        ["float64 results", len(g["float64_results"]), len(n["float64_results"])],
    ]
    detail = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
    return [
        "## Array operations per training step",
        "",
        "Counted by running one steady-state step on counting proxy arrays "
        "(gradflow.testing.counting): namespace calls, methods and operators; views are free.",
        "",
        _table(["", "gradflow", "NumPy by hand"], rows),
        "",
        f"gradflow: {detail(g['by_name'])}.",
        "",
        f"NumPy by hand: {detail(n['by_name'])}.",
        "",
    ]


def _fused_section(results: dict[str, Any]) -> list[str]:
    found = results.get("fused_operations")
    if not found:
        return []
    rows = []
    for workload, entry in found.items():
        if "status" in entry:
            rows.append([workload, entry["status"], "", "", ""])
            continue
        portable, fused = entry["portable"], entry["fused"]
        kernels = ", ".join(f"{k[6:]} {v}" for k, v in fused["by_name"].items() if k.startswith("fused:"))
        rows.append([workload, portable["operations"], fused["operations"], f"{portable['syncs']} / {fused['syncs']}",
                     kernels])
    return ["## GPU-shaped cost: array operations per step, portable path vs fused kernels", "",
            "Each array operation is at least one kernel launch on a GPU (5-10 µs each in CuPy). Counted on "
            "proxies the backend takes for CuPy arrays (gradflow.testing.counting), once with the portable "
            "array-API path and once with the fused kernels of gradflow.backend.fused (run here through their "
            "host C++ build). Host syncs: conversions of an array to a Python value per step (the validated "
            "loss's finiteness check is one; `validate=False` removes it). Each step includes its optimizer "
            "update (flat multi-tensor buffers; fused: one kernel per buffer). mlp_linear_activation: the MLP "
            "with `Linear(..., activation=\"relu\")`; sgd_momentum_step, adam_step: the optimizer step alone on "
            "20 parameter arrays with fresh gradients (the count does not grow with the number of arrays).", "",
            _table(["step", "operations, portable", "operations, fused", "host syncs, portable / fused",
                    "fused kernels per step"], rows), ""]


def _mixed_section(results: dict[str, Any]) -> list[str]:
    rows = [[row["precision"], f"{row['seconds_per_epoch']:.3f}", f"{row['accuracy']:.3f}"] if row["status"] == "ok"
            else [row["precision"], row["status"], ""] for row in results.get("mixed_precision", [])]
    if not rows:
        return []
    return ["## Mixed precision in fit (digits, Linear-BatchNorm-ReLU-Linear, Adam, batch 128, CPU)", "",
            "`fit(..., precision=...)`: float32 master weights, forward and backward in the compute dtype, "
            "BatchNorm statistics in float32, dynamic loss scaling for float16. On NumPy float16 saves memory, "
            "not time (NumPy's float16 matmul does not use BLAS); the speed-up is a GPU's.", "",
            _table(["precision", "seconds per epoch", "test accuracy"], rows), ""]


def _overhead_section(results: dict[str, Any]) -> list[str]:
    rows = [[row["what"], f"{row['gradflow_us']:.2f}", f"{row['bare_us']:.2f}",
             f"{row['overhead_us']:.2f}", f"{row['overhead_per_layer_us']:.2f} per {row['per']}"]
            for row in results["overheads"]]
    return ["## Framework overhead per call (tiny float32 inputs, best of 7)", "",
            _table(["call", "gradflow µs", "bare array ops µs", "overhead µs", "overhead"], rows), ""]


def _memory_section(results: dict[str, Any]) -> list[str]:
    growth = results.get("memory_growth")
    if not growth:
        return []
    return ["## Memory", "",
            f"tracemalloc (NumPy allocations included): {growth['held_after_settle']:,d} bytes held after "
            f"{growth['steps'] // 10 or 1} steps, {growth['held_at_end']:,d} after {growth['steps']} steps: "
            f"growth {growth['growth']:+,d} bytes. The MLP table's peak MiB is the most memory traced during a "
            "warm step, counting everything the contender allocated (weights, optimizer state, gradients, "
            "activations, temporaries); PyTorch's allocator is not traced.", ""]


def _profile_section(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile")
    if not profile:
        return []
    rows = [[row["function"], f"{row['calls_per_step']:.0f}", f"{row['own_ms_per_step']:.3f}", f"{row['own_share']:.0%}"]
            for row in profile["rows"]]
    return [f"## Where gradflow's step spends its time (batch {profile['batch']}, cProfile own time)", "",
            "Array operations run inside the Python function that calls them: Linear's forward and backprop "
            "rows are mostly their GEMMs.", "",
            _table(["function", "calls per step", "ms per step", "share"], rows), ""]


# --------------------------------------------------------------------------------------------
# README and chart
# --------------------------------------------------------------------------------------------


def readme_block(results: dict[str, Any]) -> str:
    settings = results["settings"]
    warning = load_warning(results)
    return "\n".join([
        README_BEGIN,
        f"Latest run: `{results['command']}` ({results['date']}; {_summary_line(results)})",
        "",
        *([warning, ""] if warning else []),
        f"MLP {'-'.join(map(str, settings['sizes']))} training step, float32, {_optimizer_name(settings)}:",
        "",
        mlp_table(results, "cpu"),
        "",
        targets_table(results),
        README_END,
    ])


def update_readme(path: Path, results: dict[str, Any]) -> None:
    text = path.read_text()
    if README_BEGIN.split(" (")[0] not in text or README_END not in text:
        raise SystemExit(f"{path} has no benchmark markers ({README_BEGIN!r} ... {README_END!r})")
    head = text[:text.index(README_BEGIN.split(" (")[0])]
    tail = text[text.index(README_END) + len(README_END):]
    path.write_text(head + readme_block(results) + tail)


def write_chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    section = results["mlp"].get("cpu")
    if not section:
        return False
    batches = list(section["batches"])
    names = section["contenders"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [section["batches"][b]["ms"][name] for b in batches]
        spread = [section["batches"][b].get("iqr_ms", {}).get(name) for b in batches]
        # Error bars: the interquartile range of the per-round times (how much a timing moved).
        errors = None
        if all(s is not None for s in spread):
            errors = [[max(v - s[0], 0.0) for v, s in zip(values, spread)],
                      [max(s[1] - v, 0.0) for v, s in zip(values, spread)]]
        left.bar([x + i * width for x in range(len(batches))], values, width, label=NAMES[name], yerr=errors,
                 error_kw={"elinewidth": 1, "capsize": 3, "ecolor": "black"})
    left.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(batches))], [f"batch {b}" for b in batches])
    left.set_yscale("log")
    left.set_ylabel("ms per training step (log scale)")
    left.set_title("MLP step time, CPU (median; bars: interquartile range)", fontsize=10)
    # Below the axes, so that it never covers a bar.
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(names), frameon=False)
    for key, label in (("gradflow/numpy", "gradflow / NumPy by hand"), ("gradflow/torch", "gradflow / PyTorch eager")):
        values = [section["batches"][b]["ratios"].get(key) for b in batches]
        spread = [section["batches"][b].get("ratio_iqr", {}).get(key) for b in batches]
        if all(v is not None for v in values):
            errors = None
            if all(s is not None for s in spread):
                errors = [[max(v - s[0], 0.0) for v, s in zip(values, spread)],
                          [max(s[1] - v, 0.0) for v, s in zip(values, spread)]]
            right.errorbar(batches, values, yerr=errors, marker="o", capsize=3, label=label)
    right.axhline(1.05, color="grey", linestyle="--", linewidth=1, label="1.05x target (NumPy by hand)")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_ylabel("time ratio (lower is faster)")
    right.set_title("gradflow relative to the others (median; bars: IQR)", fontsize=10)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    settings = results["settings"]
    figure.suptitle(f"MLP {'-'.join(map(str, settings['sizes']))}, float32, {_optimizer_name(settings)}, "
                    f"{results['environment']['threads']} threads", fontsize=10)
    figure.text(0.01, 0.01, f"made by: {results['command']}  ({results['date']})", fontsize=7, color="grey")
    figure.tight_layout(rect=(0, 0.04, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
