"""Every real series through the whole node: Orthanc → node → SEG + SR back in Orthanc, checked.

Each case folder of the real data (``AINODE_REAL_DATA_DIR``) is uploaded to a
real Orthanc, which sends every study to a fresh node (``ainode run``, its
default routes, CPU).  Once every job has ended, each series gets one row:
vendor, plane, voxel size, the pipeline and its outcome (or the skip reason),
the volumes in the SR, and three checks made outside the node:

* **deepbet Dice**: ``mr-brain``'s mask against deepbet run as its authors
  run it (``BrainExtraction.run`` on a NIfTI of the same voxels);
* **geometry Dice**: the SEG read back from Orthanc, frame by frame on the
  source images, against the pipeline's mask computed here;
* **CPU s**: CPU seconds (all threads) of the pipeline's ``run`` here, with
  the node's own inference wall time next to it.

Writes ``bench/results/real_series.json`` and ``.md``; run ``make bench-real``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import torch
from pydicom.misc import is_dicom
from pydicom.sr.codedict import codes
from sqlalchemy import create_engine, text

from bench.common import RESULTS_DIR, scratch
from core.config import load_settings
from pipelines.domain import orientation_name
from pipelines.io import load_input
from pipelines.outputs.agreement import dice, mask_on_source_images, seg_mask_on_source_images
from pipelines.outputs.sr import AGREEMENT, REVIEW_STATUS
from pipelines.registry import load_pipeline
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancError, OrthancServer
from tests.support.waiting import wait_until

_REPOSITORY = Path(__file__).resolve().parents[1]
_OPEN_STATES = "('queued', 'running')"
_OPEN_DELIVERIES = "('pending', 'retrying', 'sent')"


def real_data_dir() -> Path:
    """The real data folder of the settings, relative to the repository when not absolute."""
    root = load_settings().real_data_dir.expanduser()
    return root if root.is_absolute() else _REPOSITORY / root


def case_files(folder: Path) -> list[Path]:
    """Every DICOM file of a case folder, as a PACS export holds them (licence files left out)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom(p))


def _query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def _series_facts(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Per series UID: its files and the header facts of the table."""
    series: dict[str, dict[str, Any]] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        if "SeriesInstanceUID" not in ds or "PixelData" not in ds:
            continue
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or ("?", "?")
        entry = series.setdefault(
            str(ds.SeriesInstanceUID),
            {
                "study": str(ds.StudyInstanceUID),
                "description": str(ds.get("SeriesDescription", "")),
                "modality": str(ds.get("Modality", "")),
                "vendor": str(ds.get("Manufacturer", "")),
                "plane": orientation_name(ds) or "projection",
                "pixel_mm": f"{float(spacing[0]):.3g} x {float(spacing[1]):.3g}"
                if spacing[0] != "?"
                else "?",
                "thickness_mm": ds.get("SliceThickness"),
                "files": [],
            },
        )
        entry["files"].append(path)
    return series


def _report_facts(sr: pydicom.Dataset) -> dict[str, Any]:
    """Volumes (mL) by finding, and a second model's volume, Dice and review status, from an SR."""
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.Comprehensive3DSR.from_dataset(sr).content)
    facts: dict[str, Any] = {"volumes_ml": {}}
    for group in report.get_volumetric_roi_measurement_groups():
        for measurement in group.get_measurements(name=codes.SCT.Volume):
            if measurement.method is None:
                facts["volumes_ml"][str(group.finding_type.meaning)] = float(measurement.value)
            else:
                facts["second_volume_ml"] = float(measurement.value)
        for measurement in group.get_measurements(name=AGREEMENT):
            facts["agreement_dice"] = float(measurement.value)
        for evaluation in group.get_qualitative_evaluations(name=REVIEW_STATUS):
            facts["review"] = str(evaluation.value.meaning)
    return facts


def _deepbet_dice(data: Any, mask: np.ndarray) -> float | None:
    """Dice of ``mask`` against deepbet's own result on the same voxels (None without deepbet)."""
    try:
        import nibabel
        from deepbet import BrainExtraction
    except ImportError:
        return None
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(data.volume.affine)
    image = nibabel.Nifti1Image(np.asarray(data.volume.array, np.float32), affine)
    _, reference, _ = BrainExtraction(no_gpu=True).run(image)
    return dice(mask, np.asarray(reference.dataobj).astype(bool))


def _checks(pipeline_name: str, files: list[Path], seg: pydicom.Dataset | None) -> dict[str, Any]:
    """Run the pipeline here (CPU time), compare with deepbet and with the SEG from Orthanc."""
    data = load_input(files)
    pipeline = load_pipeline(pipeline_name, load_settings().models_path, "cpu")
    cpu, wall = time.process_time(), time.perf_counter()
    result = pipeline.run(data)
    facts: dict[str, Any] = {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
    }
    masks = getattr(result, "masks", None)
    if masks is None:
        return facts
    if pipeline_name == "mr-brain":
        facts["deepbet_dice"] = _deepbet_dice(data, np.asarray(masks[0], bool))
    if seg is not None:
        segmentation = hd.seg.Segmentation.from_dataset(seg)
        facts["geometry_dice"] = min(
            dice(
                seg_mask_on_source_images(segmentation, data.datasets, number),
                mask_on_source_images(data.volume, np.asarray(mask, bool), data.datasets),
            )
            for number, mask in enumerate(masks, 1)
        )
    return facts


def _run_node(
    cases: dict[str, list[Path]], workdir: Path, refused: dict[str, list[str]]
) -> tuple[list[Any], dict[str, dict]]:
    """Send every case through Orthanc to the node; the jobs and the results Orthanc holds.

    Files Orthanc itself refuses are listed in ``refused`` by case.
    """
    url = f"sqlite:///{workdir / 'var/ainode.db'}"
    with NodeProcesses(workdir, {"AINODE_LOG_LEVEL": "WARNING"}) as node:  # noqa: SIM117
        with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc:
            node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
            node.start("run")
            node.wait_listening()
            studies = set()
            for files in cases.values():
                for path in files:
                    try:
                        studies.add(orthanc.upload(path)["ParentStudy"])
                    except OrthancError as exc:
                        refused[path.parent.name].append(f"{path.name}: {exc}")
            orthanc.store_to_modality("ainode", sorted(studies))

            def settled() -> bool:
                pending = _query(
                    url,
                    f"select (select count(*) from studies where state = 'receiving'),"
                    f" (select count(*) from jobs where state in {_OPEN_STATES}),"
                    f" (select count(*) from deliveries where state in {_OPEN_DELIVERIES}),"
                    f" (select count(*) from studies)",
                )[0]
                return pending[3] > 0 and pending[:3] == (0, 0, 0)

            wait_until(settled, timeout=1800, interval=2.0, message=lambda: node.logs()[-4000:])
            jobs = _query(
                url,
                "select s.series_instance_uid, j.pipeline, j.state, j.error, j.inference_seconds"
                " from jobs j join series s on s.id = j.series_id order by j.id",
            )
            made = {
                sop: (f"{series_uid}|{pipeline}", kind)
                for series_uid, pipeline, kind, sop in _query(
                    url,
                    "select s.series_instance_uid, j.pipeline, r.kind, r.sop_instance_uid"
                    " from results r join jobs j on j.id = r.job_id"
                    " join series s on s.id = j.series_id",
                )
            }
            results: dict[str, dict] = defaultdict(dict)
            for study in orthanc.studies():
                for item in orthanc.study_instances(study):
                    sop = orthanc.instance_tags(item["ID"]).get("SOPInstanceUID")
                    if sop in made:
                        key, kind = made[sop]
                        results[key][kind] = pydicom.dcmread(
                            io.BytesIO(orthanc.download(item["ID"]))
                        )
    return jobs, results


def evaluate() -> dict[str, Any]:
    """One row per series and pipeline of every real case; see the module docstring."""
    root = real_data_dir()
    if not root.is_dir():
        raise SystemExit(f"no real data in {root} (AINODE_REAL_DATA_DIR)")
    cases = {
        folder.name: case_files(folder) for folder in sorted(root.iterdir()) if folder.is_dir()
    }
    series = {
        uid: {**facts, "case": case}
        for case, files in cases.items()
        for uid, facts in _series_facts(files).items()
    }
    started = datetime.now(UTC)
    refused: dict[str, list[str]] = defaultdict(list)
    jobs, results = _run_node(cases, scratch("real-series"), refused)
    rows = []
    routed = set()
    for series_uid, pipeline_name, state, error, inference_s in jobs:
        routed.add(series_uid)
        facts = series[series_uid]
        found = results.get(f"{series_uid}|{pipeline_name}", {})
        row = {
            **{k: v for k, v in facts.items() if k != "files"},
            "files": len(facts["files"]),
            "pipeline": pipeline_name,
            "state": state,
            "reason": error,
            "node_inference_s": inference_s,
            **(_report_facts(found["sr"]) if "sr" in found else {}),
        }
        if state == "succeeded":
            row.update(_checks(pipeline_name, facts["files"], found.get("seg")))
        rows.append(row)
    for uid, facts in series.items():
        if uid not in routed:
            rows.append(
                {
                    **{k: v for k, v in facts.items() if k != "files"},
                    "pipeline": "-",
                    "state": "not routed",
                    "reason": "no routing rule matches",
                }
            )
    return {
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": sorted(rows, key=lambda row: (row["case"], row["pipeline"])),
        "refused_by_orthanc": dict(refused),
    }


def _cell(value: Any, digits: int = 2) -> str:
    if value is None or value == {}:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The table of ``report`` as Markdown (one row per series, pipeline and outcome)."""
    machine = report["machine"]
    lines = [
        f"Run {report['started']}, {machine['cpu_count']} CPUs ({machine['torch_threads']} torch "
        f"threads), GPU: {machine['gpu'] or 'none'}.",
        "",
        "| case (series) | vendor | plane | pixel, slice (mm) | pipeline | outcome | volume (mL) "
        "| HD-BET (mL) | deepbet/HD-BET Dice | review | vs deepbet own Dice | geometry Dice "
        "| CPU s | wall s | node infer s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for row in report["rows"]:
        key = (row["case"], row["description"], row["pipeline"], row["state"], row["reason"])
        if row["state"] != "succeeded" and key in seen:
            continue  # the same outcome for another job of the series (instances sent again)
        seen.add(key)
        outcome = (
            row["state"] if row["state"] == "succeeded" else f"{row['state']}: {row['reason']}"
        )
        volumes = ", ".join(f"{name} {ml:.0f}" for name, ml in row.get("volumes_ml", {}).items())
        thickness = f", {float(row['thickness_mm']):.3g}" if row.get("thickness_mm") else ""
        voxel = f"{row['pixel_mm']}{thickness}"
        lines.append(
            f"| {row['case']} ({row['description'] or '-'}) | {row['vendor'] or '-'} "
            f"| {row['plane']} | {voxel} "
            f"| {row['pipeline']} | {outcome} | {volumes or '-'} "
            f"| {_cell(row.get('second_volume_ml'), 0)} | {_cell(row.get('agreement_dice'), 4)} "
            f"| {row.get('review', '-')} "
            f"| {_cell(row.get('deepbet_dice'), 4)} | {_cell(row.get('geometry_dice'), 4)} "
            f"| {_cell(row.get('cpu_s'), 1)} | {_cell(row.get('wall_s'), 1)} "
            f"| {_cell(row.get('node_inference_s'), 1)} |"
        )
    for case, reasons in report.get("refused_by_orthanc", {}).items():
        first = reasons[0].split(" -> ")[0]
        lines.append(f"\n{case}: {len(reasons)} file(s) refused by Orthanc ({first})")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Evaluate, write ``bench/results/real_series.{json,md}`` and print the table.

    ``BENCH_REPORT_ONLY=1`` rebuilds the Markdown from the last JSON.
    """
    if os.environ.get("BENCH_REPORT_ONLY"):
        report = json.loads((RESULTS_DIR / "real_series.json").read_text())
    else:
        report = evaluate()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "real_series.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS_DIR / "real_series.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
