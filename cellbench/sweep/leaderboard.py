"""The leaderboard: every trial with its run's best monitored metric, ranked by config.

Trials of one phase that differ only by seed form a group, ranked by the mean of their best
values (mean ± sample std over seeds). The monitored metric and whether it is minimised are the
trials' own: ``best.metric`` of the run (its ``train.early_stopping.monitor``) and the ``mode`` of
its saved config, resolved by ``cellbench.engine.early_stopping.resolve_mode`` (the rule that
chose its ``best.pt``), so the sweep ranks exactly as each run judged its epochs.

``best`` is the best group of the last phase that ranked anything (a smoke phase only when it is
the only one), its best trial, and the ``cellbench train`` command that trains it again.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter
from typing import Any

import yaml

from cellbench.atomic import atomic_write, atomic_write_json
from cellbench.engine.early_stopping import resolve_mode
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize
from cellbench.strict_json import csv_cell
from cellbench.sweep.store import SweepFolder, SweepState
from cellbench.sweep.trials import Trial, label

CSV_COLUMNS = (
    "rank",
    "trial",
    "run",
    "phase",
    "config",
    "seed",
    "status",
    "metric",
    "value",
    "mean",
    "std",
    "n",
    "epochs",
    "time_s",
    "reason",
)


def _mode(run_config, metric: str | None) -> str | None:
    if metric is None:
        return None
    try:
        config = yaml.safe_load(run_config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    mode = ((config.get("train") or {}).get("early_stopping") or {}).get("mode", "auto")
    return resolve_mode(str(mode), metric)


def outcome(store: RunStore, trial: Trial, entry: dict[str, Any]) -> dict[str, Any]:
    """One trial as a leaderboard row (unranked)."""
    row: dict[str, Any] = {
        "trial": trial.id,
        "run": entry.get("run"),
        "phase": trial.phase,
        "config": label(trial.params) or "(base)",
        "params": trial.params,
        "seed": trial.seed,
        "status": entry.get("status", "pending"),
        "metric": None,
        "value": None,
        "mode": None,
        "epochs": 0,
        "time_s": None,
        "reason": entry.get("reason"),
        "group": trial.group,
    }
    run = store.find(trial.name)
    if run is None:
        return row
    summary = summarize(run)
    row["run"] = run.root.name
    row["epochs"] = summary.epochs
    row["time_s"] = round(summary.duration_s, 2) if summary.duration_s is not None else None
    row["metric"] = summary.best_metric
    # the run's own judgement when it recorded one; older runs: their config's rule
    row["mode"] = summary.best_mode or _mode(run.config, summary.best_metric)
    if summary.best_value is not None and row["status"] in ("completed", "pruned"):
        row["value"] = float(summary.best_value)
    return row


def rank_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of rows with a value, best first: ``{group, mean, std, n, rows}``."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["value"] is not None:
            by_group.setdefault(row["group"], []).append(row)
    if not by_group:
        return []
    minimise = _sweep_mode(rows) == "min"
    groups = []
    for key, members in by_group.items():
        values = [r["value"] for r in members]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        members.sort(key=lambda r: r["value"], reverse=not minimise)
        groups.append({"group": key, "mean": mean, "std": std, "n": len(values), "rows": members})
    groups.sort(key=lambda g: g["mean"], reverse=not minimise)
    return groups


def _sweep_mode(rows: list[dict[str, Any]]) -> str | None:
    modes = Counter(r["mode"] for r in rows if r["mode"])
    return modes.most_common(1)[0][0] if modes else None


def _sweep_metric(rows: list[dict[str, Any]]) -> str | None:
    metrics = Counter(r["metric"] for r in rows if r["metric"] and r["value"] is not None)
    return metrics.most_common(1)[0][0] if metrics else None


def build(
    folder: SweepFolder, trials: list[Trial], state: SweepState, store: RunStore, phases: list
) -> dict[str, Any]:
    """The leaderboard as a dict: ``rows`` (ranked, then unranked), ``best``, ``metric``."""
    rows = [outcome(store, t, state.trial(t.id)) for t in trials]
    ranked: list[dict[str, Any]] = []
    best = None
    order = [p.name for p in phases]
    for phase in order:
        groups = rank_groups([r for r in rows if r["phase"] == phase])
        for number, group in enumerate(groups, start=1):
            for row in group["rows"]:
                row.update(rank=number, mean=group["mean"], std=group["std"], n=group["n"])
                ranked.append(row)
    ranked_ids = {r["trial"] for r in ranked}
    rest = [r for r in rows if r["trial"] not in ranked_ids]
    for row in rest:
        row.update(rank=None, mean=None, std=None, n=0)
    kinds = {p.name: p.kind for p in phases}
    candidates = [p for p in reversed(order) if kinds[p] != "smoke"] + [
        p for p in order if kinds[p] == "smoke"
    ]
    by_trial = {t.id: t for t in trials}
    for phase in candidates:
        top = [r for r in ranked if r["phase"] == phase and r["rank"] == 1]
        if top:
            row = top[0]
            trial = by_trial[row["trial"]]
            best = {
                "trial": row["trial"],
                "run": row["run"],
                "phase": phase,
                "config": row["config"],
                "params": row["params"],
                "seed": row["seed"],
                "metric": row["metric"],
                "value": row["value"],
                "mean": row["mean"],
                "std": row["std"],
                "n": row["n"],
                "command": trial.command(),
            }
            break
    ordered = sorted(ranked, key=lambda r: (order.index(r["phase"]), r["rank"]))
    for row in ordered + rest:
        row.pop("group", None)
    return {
        "sweep": folder.name,
        "status": state.data.get("status"),
        "metric": _sweep_metric(rows),
        "mode": _sweep_mode(rows),
        "rows": ordered + rest,
        "best": best,
    }


def write(folder: SweepFolder, board: dict[str, Any]) -> None:
    atomic_write_json(folder.leaderboard_json, board)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in board["rows"]:
        writer.writerow({k: csv_cell(row.get(k)) for k in CSV_COLUMNS})
    atomic_write(folder.leaderboard_csv, lambda fh: fh.write(buffer.getvalue()), mode="w")
