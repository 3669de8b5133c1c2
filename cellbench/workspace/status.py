"""``cellbench status``: where am I. The workspace and its folders, its stores (tiles, size,
stale or not), the runs running and their progress, the sweeps and workflows not finished, the
disk that ``clean`` could free, the GPUs and their memory.

Reads files and NVML only (no torch), so it answers in well under a second on a CPU machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cellbench.workspace.file import Workspace, current
from cellbench.workspace.stores import (
    data_store_health,
    feature_store_health,
    find_data_stores,
    find_feature_stores,
    folder_bytes,
)


def _folders(ws: Workspace | None) -> dict[str, Path]:
    from cellbench.runs.store import RunStore
    from cellbench.sweep.store import default_sweeps_root

    runs = RunStore().root  # $CELLBENCH_RUNS_DIR > workspace > ./runs
    data_env = os.environ.get("CELLBENCH_DATA_DIR")
    data = ws.folder("data") if ws is not None else Path("data")
    if data_env:
        data = Path(data_env)
    workflows = ws.folder("workflows") if ws is not None else runs.parent / "workflows"
    if os.environ.get("CELLBENCH_WORKFLOWS_DIR"):  # cellbench workflow's own variable
        workflows = Path(os.environ["CELLBENCH_WORKFLOWS_DIR"])
    return {"data": data, "runs": runs, "sweeps": default_sweeps_root(runs), "workflows": workflows}


def _runs(runs_root: Path) -> tuple[dict[str, Any], int]:
    from cellbench.runs.store import RunStore
    from cellbench.runs.summary import read_run_config, summarize

    by_status: dict[str, int] = {}
    running = []
    checkpoint_bytes = 0
    for run in RunStore(runs_root).runs():
        summary = summarize(run)
        by_status[summary.status] = by_status.get(summary.status, 0) + 1
        if run.checkpoints.is_dir():
            checkpoint_bytes += folder_bytes(run.checkpoints)
        if summary.status == "running":
            config, _ = read_run_config(run)
            total = (config.get("train") or {}).get("epochs")
            running.append(
                {
                    "run": run.root.name,
                    "task": summary.task,
                    "epoch": summary.epochs,
                    "epochs": total,
                    "best_metric": summary.best_metric,
                    "best_value": summary.best_value,
                    "duration_s": summary.duration_s,
                }
            )
    return {"by_status": by_status, "running": running}, checkpoint_bytes


def _workflows(root: Path) -> list[dict[str, Any]]:
    """Workflows not finished. ``cellbench.workflow`` (issue #18) owns the format and its
    reader ``list_workflows``; without that package this looks at each
    ``<workflows>/<name>/state.json``'s ``status`` only."""
    import json

    try:
        from cellbench.workflow import list_workflows
    except ImportError:
        list_workflows = None
    if list_workflows is not None:
        return [
            {
                "workflow": w["name"],
                "status": w["status"],
                "phases_done": w.get("phases_done"),
                "phases": w.get("phases"),
                "current": w.get("current"),
            }
            for w in list_workflows(root)
            if w["status"] != "completed"
        ]
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            state = json.loads((folder / "state.json").read_text())
            status = str(state.get("status") or "unknown") if isinstance(state, dict) else "unknown"
        except (OSError, ValueError):
            status = "unknown"
        if status != "completed":
            out.append({"workflow": folder.name, "status": status})
    return out


def gpus() -> tuple[list[dict[str, Any]], str | None]:
    """(devices, None) from NVML, or ([], why not) quietly: "no GPU" on a CPU machine."""
    try:
        import pynvml
    except ImportError:
        return [], "no GPU (NVML not installed)"
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError and OSError: no driver, no device
        return [], "no GPU"
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "used": int(memory.used),
                    "total": int(memory.total),
                }
            )
        return devices, None if devices else "no GPU"
    except Exception as exc:  # a driver that answers init but not queries
        return [], f"GPU query failed ({exc})"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def gather() -> dict[str, Any]:
    from cellbench.sweep.catalog import sweep_entries

    ws = current()
    folders = _folders(ws)
    default_features = ws.default_path("features") if ws is not None else None
    default_data = ws.default_path("data") if ws is not None else None

    def same(a: Path | None, b: Path) -> bool:
        return a is not None and os.path.realpath(a) == os.path.realpath(b)

    def entry(health, default: Path | None) -> dict[str, Any]:
        shown = ws.shown(health.path) if ws is not None else str(health.path)
        return {**health.to_dict(), "path": shown, "default": same(default, health.path)}

    stores = [entry(data_store_health(p), default_data) for p in find_data_stores(folders["data"])]
    stores += [
        entry(feature_store_health(p), default_features)
        for p in find_feature_stores(folders["data"])
    ]
    missing = [
        (key, p)
        for key, p in (("data", default_data), ("features", default_features))
        if p is not None and not p.is_dir()
    ]
    runs, checkpoint_bytes = _runs(folders["runs"])
    devices, gpu_note = gpus()
    return {
        "workspace": str(ws.file) if ws is not None else None,
        "folders": {k: str(v) for k, v in folders.items()},
        "defaults": {
            k[len("defaults.") :]: v
            for k, v in (ws.values if ws else {}).items()
            if k.startswith("defaults.") and v
        },
        "missing_defaults": [{"key": f"defaults.{k}", "path": str(p)} for k, p in missing],
        "stores": stores,
        "runs": runs,
        "sweeps": [
            e.to_dict() for e in sweep_entries(folders["sweeps"]) if e.status != "completed"
        ],
        "workflows": _workflows(folders["workflows"]),
        "disk": {
            "checkpoints": checkpoint_bytes,
            "feature_stores": sum(s["bytes"] for s in stores if s["kind"] == "features"),
            "data_stores": sum(s["bytes"] for s in stores if s["kind"] == "data"),
        },
        "gpus": devices,
        "gpu_note": gpu_note,
    }
