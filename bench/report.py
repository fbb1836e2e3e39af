"""Turn ``bench/results/latest.json`` into ``latest.md`` and small PNG plots."""
# ruff: noqa: RUF001

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PHASES = [
    "stability_wait",
    "routing",
    "queue_wait",
    "load",
    "inference",
    "seg_build",
    "sr_build",
    "db_writes",
    "write",
    "send_scheduling",
    "send",
]

Row = dict[str, Any]
Check = tuple[str, str, str]
"""One line of the targets table: the target, the measured value, met or missed."""


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _ingest_rows(ingest: dict[str, Any]) -> list[Row]:
    return [r for r in ingest.get("throughput", []) if "syntax" not in r]


def _find(rows: list[Row], receiver: str, associations: int) -> Row | None:
    return next(
        (r for r in rows if r["receiver"] == receiver and r["associations"] == associations), None
    )


def _best_node(rows: list[Row], associations: int) -> Row | None:
    """The fastest node configuration with ``associations`` associations."""
    return max(
        (r for r in rows if r["receiver"].startswith("node") and r["associations"] == associations),
        key=lambda r: r["instances_per_s"],
        default=None,
    )


def _run_header(results: dict[str, Any]) -> list[str]:
    """The title, the run's times and versions, each section's times and the machine load."""
    out = [
        "# Benchmark results",
        "",
        f"Run {results.get('started')} → {results.get('finished')}; medians of "
        f"{results.get('runs')} runs{' (BENCH_QUICK)' if results.get('quick') else ''}; "
        + ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items()),
        "",
    ]
    sections = results.get("section_times")
    if sections:
        out += [
            "Sections (a `BENCH_ONLY` run refreshes its own and keeps the others): "
            + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in sections.items()),
            "",
        ]
    loads = results.get("load_average")
    if loads:
        out += [
            "Machine load (1-min load average before → after each section; the machine "
            "is shared, so figures of one run are compared with peers measured in the same "
            "run, interleaved): " + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in loads.items()),
            "",
        ]
    return out


def _throughput_table(ingest: dict[str, Any], rows: list[Row]) -> list[str]:
    """Every receiver's rate per association count, against dcmtk and Orthanc of the same run."""
    out = [
        f"## Ingest: {ingest['slices']} × 512² CT, dcmtk storescu, loopback",
        "",
        "| receiver | assoc. | instances/s | MB/s | × dcmtk | × Orthanc | runs (s) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        dcmtk = _find(rows, "dcmtk", row["associations"])
        orthanc = _find(rows, "orthanc", row["associations"])
        ratio_d = row["instances_per_s"] / dcmtk["instances_per_s"] if dcmtk else float("nan")
        ratio_o = row["instances_per_s"] / orthanc["instances_per_s"] if orthanc else float("nan")
        out.append(
            f"| {row['receiver']} | {row['associations']} | {row['instances_per_s']:.0f} | "
            f"{row['mb_per_s']:.0f} | {ratio_d:.2f} | {ratio_o:.2f} | "
            f"{', '.join(f'{s:.2f}' for s in row['seconds_runs'])} |"
        )
    return out


def _scaling_line(rows: list[Row]) -> list[str]:
    """Every receiver's 4- and 8-association rate over its own single association."""
    ratios = []
    for one in (r for r in rows if r["associations"] == 1):
        four, eight = (_find(rows, one["receiver"], n) for n in (4, 8))
        if four is None:
            continue
        text = f"{one['receiver']} {four['instances_per_s'] / one['instances_per_s']:.2f}×"
        if eight is not None:
            text += f" / {eight['instances_per_s'] / one['instances_per_s']:.2f}×"
        ratios.append(text)
    if not ratios:
        return []
    return [
        "",
        "Each receiver's 4 (/ 8) associations over its own single association: "
        + ", ".join(ratios)
        + ".",
    ]


def _cpu_table(rows: list[Row], cores: int) -> list[str]:
    """Where the CPU went in the ingest runs (rows of runs without CPU figures are left out)."""
    rows = [r for r in rows if "cpu" in r]
    if not rows:
        return []
    out = [
        "",
        "Where the CPU went (medians of the same runs): CPU ms per instance for the whole "
        "machine (kernel threads and interrupts included), the receiver's process tree and "
        "the storescu senders; the shares of the cores' time that were busy, idle with a task "
        "waiting for the disk, and idle; and the rate the machine's CPU per instance would "
        f"allow with all {cores or '?'} cores busy all the time:",
        "",
        "| receiver | assoc. | machine ms | receiver ms | senders ms | busy | disk wait | idle "
        "| CPU-bound rate /s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = row["cpu"]
        bound = cores * 1000 / cpu["machine_ms"] if cores and cpu["machine_ms"] else float("nan")
        out.append(
            f"| {row['receiver']} | {row['associations']} | {cpu['machine_ms']:.2f} | "
            f"{cpu['receiver_ms']:.2f} | {cpu['sender_ms']:.2f} | {cpu['busy']:.0%} | "
            f"{cpu['iowait']:.0%} | {cpu['idle']:.0%} | {bound:.0f} |"
        )
    return out


def _jpeg2000_table(ingest: dict[str, Any]) -> list[str]:
    """The JPEG 2000 lossless variant's rates (none if the run had no such rows)."""
    j2k = [r for r in ingest.get("throughput", []) if r.get("syntax")]
    if not j2k:
        return []
    out = ["", "JPEG 2000 lossless variant (100 slices, 1 association):", ""]
    out += ["| receiver | instances/s | MB/s |", "|---|---:|---:|"]
    out += [f"| {r['receiver']} | {r['instances_per_s']:.0f} | {r['mb_per_s']:.0f} |" for r in j2k]
    return out


def _single_association_checks(rows: list[Row]) -> list[Check]:
    """The best node configuration's single association against dcmtk and Orthanc."""
    d1, o1 = _find(rows, "dcmtk", 1), _find(rows, "orthanc", 1)
    best1 = _best_node(rows, 1)
    if not (best1 and d1 and o1):
        return []
    rate = best1["instances_per_s"]
    return [
        (
            "1 assoc ≥ 0.5× dcmtk",
            f"{rate / d1['instances_per_s']:.2f}×",
            _mark(rate >= 0.5 * d1["instances_per_s"]),
        ),
        (
            "1 assoc ≥ 1.5× Orthanc",
            f"{rate / o1['instances_per_s']:.2f}×",
            _mark(rate >= 1.5 * o1["instances_per_s"]),
        ),
    ]


def _scaling_checks(rows: list[Row]) -> list[Check]:
    """4 associations against 1: the best node configuration against its own and the default's."""
    checks: list[Check] = []
    scaling = max(
        (
            (r4["instances_per_s"] / r1["instances_per_s"], r4["receiver"])
            for r1 in rows
            if r1["receiver"].startswith("node") and r1["associations"] == 1
            for r4 in [_find(rows, r1["receiver"], 4)]
            if r4 is not None
        ),
        default=None,
    )
    if scaling is not None:
        ratio, receiver = scaling
        checks.append(
            (
                f"4 assoc ≥ 1.7× 1 assoc (best: {receiver}, its own 1 assoc)",
                f"{ratio:.2f}×",
                _mark(ratio >= 1.7),
            )
        )
    default1, best4 = _find(rows, "node", 1), _best_node(rows, 4)
    if default1 and best4:
        ratio = best4["instances_per_s"] / default1["instances_per_s"]
        checks.append(
            (
                f"4 assoc ≥ 1.7× 1 assoc (best: {best4['receiver']}, against the default node)",
                f"{ratio:.2f}×",
                _mark(ratio >= 1.7),
            )
        )
    return checks


def _memory_section(memory: Row | list[Row] | None) -> tuple[list[str], list[Check]]:
    """The SCP's peak RSS while studies arrive at once, and its ≤ 300 MB checks."""
    if isinstance(memory, dict):
        memory = [memory]
    if not memory:
        return [], []
    out = ["", "Peak RSS of the SCP (process tree) while studies arrive at once:", ""]
    out += ["| receiver processes | studies × slices | MB received | peak RSS MB | runs |"]
    out += ["|---:|---|---:|---:|---|"]
    checks: list[Check] = []
    for m in memory:
        runs = ", ".join(f"{peak:.0f}" for peak in m.get("peak_rss_mb_runs", []))
        out.append(
            f"| {m.get('receiver_processes', 1)} | {m['studies']} × {m['slices']} | "
            f"{m['megabytes_received']} | {m['peak_rss_mb']:.0f} | {runs} |"
        )
        checks.append(
            (
                f"peak RSS ≤ 300 MB ({m.get('receiver_processes', 1)} proc.)",
                f"{m['peak_rss_mb']:.0f} MB",
                _mark(m["peak_rss_mb"] <= 300),
            )
        )
    return out, checks


def _ingest_section(results: dict[str, Any]) -> tuple[list[str], list[Check]]:
    """The ingest tables (throughput, scaling, CPU, JPEG 2000, memory) and their checks."""
    ingest = results.get("ingest")
    if not ingest:
        return [], []
    rows = _ingest_rows(ingest)
    cpus = str(results.get("versions", {}).get("cpus", ""))
    out = _throughput_table(ingest, rows)
    out += _scaling_line(rows)
    out += _cpu_table(rows, int(cpus) if cpus.isdigit() else 0)
    out += _jpeg2000_table(ingest)
    memory_lines, memory_checks = _memory_section(ingest.get("memory"))
    out += [*memory_lines, ""]
    return out, _single_association_checks(rows) + _scaling_checks(rows) + memory_checks


def _ttr_checks(ttr: list[Row]) -> list[Check]:
    """The 300-slice study's overhead, load, SEG build and orchestration against their targets."""
    t300 = next((t for t in ttr if t["slices"] == 300), None)
    if not t300:
        return []
    return [
        (
            "300: everything but stability + compute ≤ 3 s",
            f"{t300['overhead']:.2f} s",
            _mark(t300["overhead"] <= 3),
        ),
        ("300: volume load ≤ 1.5 s", f"{t300['load']:.2f} s", _mark(t300["load"] <= 1.5)),
        ("300: SEG build ≤ 2 s", f"{t300['seg_build']:.2f} s", _mark(t300["seg_build"] <= 2)),
        (
            "300: orchestration ≤ 0.2 s",
            f"{t300['orchestration']:.2f} s",
            _mark(t300["orchestration"] <= 0.2),
        ),
    ]


def _ttr_section(results: dict[str, Any]) -> tuple[list[str], list[Check]]:
    """Time to result by phase per study size, what the derived phases mean, and the checks."""
    ttr = results.get("ttr")
    if not ttr:
        return [], []
    out = [
        "## Time to result (last C-STORE response → SEG + SR in Orthanc), `ct-lungs`, CPU",
        "",
        "| phase (s) | " + " | ".join(f"{t['slices']} slices" for t in ttr) + " |",
        "|---|" + "---:|" * len(ttr),
    ]
    for phase in [*PHASES, "visible_in_orthanc", "orchestration", "overhead", "total"]:
        out.append(
            f"| {phase} | " + " | ".join(f"{t.get(phase, float('nan')):.2f}" for t in ttr) + " |"
        )
    out += [
        "",
        "`overhead` = total − stability wait − inference (the pipeline's compute); "
        "`orchestration` = routing + queue wait + send scheduling + DB writes; "
        "`db_writes` = job run time − load − inference − (SEG/SR build + write); "
        "`write` = writing the result files (the job's write time less the SEG/SR build, "
        "timed inside the worker by `bench/hooks/sitecustomize.py`).",
        "",
    ]
    return out, _ttr_checks(ttr)


def _seg_checks(seg: list[Row]) -> list[Check]:
    """The node's LABELMAP and BINARY writers against their time and memory targets."""
    checks: list[Check] = []
    limits = {"node-labelmap": ("SEG LABELMAP ≤ 3 s", 3), "node-binary": ("SEG BINARY ≤ 15 s", 15)}
    for row in seg:
        if row["config"] in limits:
            name, seconds = limits[row["config"]]
            checks.append(
                (
                    name,
                    f"{row['build_write_seconds']:.2f} s",
                    _mark(row["build_write_seconds"] <= seconds),
                )
            )
        if row["config"].startswith("node"):
            checks.append(
                (
                    f"{row['config']} peak RSS ≤ 1.5 GB",
                    f"{row['peak_rss_mb']:.0f} MB",
                    _mark(row["peak_rss_mb"] <= 1536),
                )
            )
    return checks


def _seg_section(results: dict[str, Any]) -> tuple[list[str], list[Check]]:
    """SEG writing time, size and memory per writer, and the checks."""
    seg = results.get("seg")
    if not seg:
        return [], []
    out = [
        f"## SEG writing: 117 segments on 512 × 512 × {seg[0]['slices']}",
        "",
        "| writer | build s | build + write s | MB | frames | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in seg:
        out.append(
            f"| {row['config']} | {row['build_seconds']:.2f} | "
            f"{row['build_write_seconds']:.2f} | {row['megabytes']} | {row['frames']} | "
            f"{row['peak_rss_mb']:.0f} |"
        )
    out.append("")
    return out, _seg_checks(seg)


def _backlog_section(results: dict[str, Any]) -> list[str]:
    """Queued studies cleared by N workers."""
    backlog = results.get("backlog")
    if not backlog:
        return []
    out = [
        "## Backlog: queued studies cleared by N workers",
        "",
        "| workers | studies × slices | wall s | studies/hour | pipeline busy | load share |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in backlog:
        out.append(
            f"| {row['workers']} | {row['studies']} × {row['slices']} | "
            f"{row['wall_seconds']:.1f} | {row['studies_per_hour']:.0f} | "
            f"{row['pipeline_busy_fraction']:.2f} | {row['load_fraction']:.2f} |"
        )
    out.append("")
    return out


def _targets_table(checks: list[Check]) -> list[str]:
    """Every target checked in this run, met or missed."""
    if not checks:
        return []
    out = ["## Targets", "", "| target | measured | |", "|---|---:|---|"]
    out += [f"| {name} | {value} | {mark} |" for name, value, mark in checks]
    out.append("")
    return out


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report of a run: when it ran, a table per section, then the targets."""
    out = _run_header(results)
    checks: list[Check] = []
    for section in (_ingest_section, _ttr_section, _seg_section):
        lines, section_checks = section(results)
        out += lines
        checks += section_checks
    out += _backlog_section(results)
    out += _targets_table(checks)
    return "\n".join(out)


def _save(fig: Figure, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _ingest_plot(ingest: dict[str, Any], folder: Path) -> Path:
    """Bars of every receiver's rate with 1, 4 and 8 associations."""
    import matplotlib.pyplot as plt

    rows = _ingest_rows(ingest)
    receivers = list(dict.fromkeys(r["receiver"] for r in rows))
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    width = 0.27
    for offset, assoc in ((-width, 1), (0.0, 4), (width, 8)):
        values = [
            (_find(rows, name, assoc) or {"instances_per_s": 0})["instances_per_s"]
            for name in receivers
        ]
        ax.bar([i + offset for i in range(len(receivers))], values, width, label=f"{assoc} assoc.")
    ax.set_xticks(range(len(receivers)), receivers, rotation=30, ha="right")
    ax.set_ylabel("instances/s")
    ax.set_title(f"Ingest, {ingest['slices']} × 512² CT")
    ax.legend()
    return _save(fig, folder / "ingest.png")


def _phases_plot(ttr: list[Row], folder: Path) -> Path:
    """Stacked bars of the time-to-result phases per study size."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    labels = [f"{t['slices']}" for t in ttr]
    bottom = [0.0] * len(ttr)
    colours = plt.get_cmap("tab20").colors
    for index, phase in enumerate(PHASES):
        values = [max(0.0, t.get(phase, 0.0)) for t in ttr]
        ax.barh(labels, values, left=bottom, label=phase, color=colours[index])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("seconds")
    ax.set_ylabel("slices")
    ax.set_title("Time to result by phase")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return _save(fig, folder / "ttr_phases.png")


def _scaling_plot(ttr: list[Row], folder: Path) -> Path:
    """Lines of the main phases against the study's size."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    slices = [t["slices"] for t in ttr]
    for phase in ("load", "inference", "seg_build", "write", "send", "overhead", "total"):
        ax.plot(slices, [t.get(phase, 0.0) for t in ttr], marker="o", label=phase)
    ax.set_xlabel("slices (512²)")
    ax.set_ylabel("seconds")
    ax.set_title("Scaling with study size")
    ax.legend(fontsize=7)
    return _save(fig, folder / "scaling.png")


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the README's PNG plots (ingest bars, phase stacks, scaling lines); their paths."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    ingest = results.get("ingest")
    if ingest:
        written.append(_ingest_plot(ingest, folder))
    ttr = results.get("ttr")
    if ttr:
        written += [_phases_plot(ttr, folder), _scaling_plot(ttr, folder)]
    return written


def write_report(results: dict[str, Any], folder: Path) -> None:
    """Write ``latest.md`` and the plots of ``results`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.md").write_text(markdown(results))
    plots(results, folder)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    write_report(json.loads((folder / "latest.json").read_text()), folder)
