"""``cellbench features extract|check``: frozen-backbone features of a nuclei store.

torch and timm load inside the command bodies: ``cellbench --help`` stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    MachineOption,
    console,
    err_console,
    log,
    print_json,
    warn,
)
from cellbench.cli.lists import list_options, parse_folds, split_values
from cellbench.errors import CheckFailed, UsageError

app = typer.Typer(
    help="Extract frozen-backbone features into a store, and check them.", no_args_is_help=True
)

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator:
    """A callback (fold, done, total) drawing one Rich bar per fold: tiles/s and ETA."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[int, int] = {}
    import time

    starts: dict[int, tuple[float, int]] = {}

    def update(fold: int, done: int, total: int) -> None:
        if fold not in tasks:
            tasks[fold] = bar.add_task(f"extract fold {fold}", total=total, rate="")
            starts[fold] = (time.perf_counter(), done)
        t0, d0 = starts[fold]
        elapsed = time.perf_counter() - t0
        rate = f"{(done - d0) / elapsed:.1f} tiles/s" if elapsed > 0 and done > d0 else ""
        bar.update(tasks[fold], completed=done, rate=rate)

    with bar:
        yield update


@app.command("extract", cls=list_options("--folds", "--blocks"))
def extract_command(
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            help="Shipped profile (h-optimus-0, vit-demo), a YAML profile, or a timm ViT name.",
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Nuclei store (from data prepare; default: the workspace's defaults.data).",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Local .pth/.safetensors backbone weights.")
    ] = None,
    pretrained: Annotated[
        bool,
        typer.Option("--pretrained", help="Load weights through timm from the hub (or its cache)."),
    ] = False,
    folds: Annotated[
        list[str] | None,
        typer.Option("--folds", help="Folds, e.g. --folds 1 2 or 1,2 (default: all)."),
    ] = None,
    blocks: Annotated[
        list[str] | None,
        typer.Option(
            "--blocks", help="1-based blocks whose tokens to keep, e.g. 10 20 30 40 or 10,20,30,40."
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Store name under DATA/features/ (default: backbone)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Tiles per forward (default 8, or --machine's)."),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            help="Commit (fsync + manifest) at least every N tiles; by default every 10 s. "
            "What an interruption may redo; memory is bounded by the batches in flight.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1...")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Extract again even if up to date or made otherwise.")
    ] = False,
    machine: MachineOption = None,
    json_out: JsonOption = False,
) -> None:
    """Extract CLS and block tokens of every tile into DATA/features/TAG (float16, memory-mapped).

    Interrupted (Ctrl-C, SIGTERM, a kill), it resumes where it stopped when run again.
    Exit codes: 0 ok · 2 bad usage · 3 bad data/weights · 4 tag made otherwise or locked ·
    130 interrupted.
    """
    data = _data_store(data)
    from cellbench.features.extract import extract_features
    from cellbench.machines import machine_batch
    from cellbench.models.backbones import build_backbone, load_backbone_profile, parse_blocks

    batch_size = machine_batch(machine, batch_size, "features", default=8)
    chosen_blocks = parse_blocks(" ".join(split_values(blocks)), "--blocks") if blocks else None
    profile = load_backbone_profile(backbone)
    model = build_backbone(
        profile, weights, pretrained=pretrained, blocks=chosen_blocks, device=device
    )
    log(
        f"backbone {escape(profile.name)} ({model.weights['source']} weights) on {model.device}: "
        f"blocks {list(model.blocks)}, grid {model.grid[0]}x{model.grid[1]}, dim {model.dim}"
    )
    with _progress(enabled=not json_out) as progress:
        root, results = extract_features(
            data,
            model,
            folds=parse_folds(folds),
            tag=tag,
            batch_size=batch_size,
            chunk_size=chunk_size,
            force=force,
            progress=progress,
        )
    from cellbench.workspace.defaults import record_default

    record_default("features", root, say=log)  # when the workspace has none yet
    for r in results:  # the store is written, but no head should learn from these tiles
        if r.nonfinite_tiles:
            warn(
                f"fold {r.fold}: {r.nonfinite_tiles} of {r.tiles} tiles have NaN/Inf features "
                f"(cellbench features check {root} lists them)"
            )
    if json_out:
        print_json({"store": str(root), "folds": [r.to_dict() for r in results]})
        return
    table = Table(title=escape(f"Features {root}"))
    for column in ("fold", "status", "tiles", "CLS std"):
        table.add_column(column, justify="left" if column == "status" else "right")
    for r in results:
        std = "-" if r.cls_std is None else f"{r.cls_std:.3f}"
        table.add_row(str(r.fold), r.status, str(r.tiles), std)
    console.print(table)
    console.print(f"[dim]next: cellbench features check {escape(str(root))}[/]")


def _data_store(data: Path | None) -> Path:
    """--data, else the workspace's default data store (said on stderr)."""
    if data is not None:
        return data
    from cellbench.workspace import current

    ws = current()
    default = ws.default_path("data") if ws is not None else None
    if default is None:
        raise UsageError(
            "features extract: give --data STORE (a store from cellbench data prepare); a "
            "workspace remembers one as defaults.data (docs/workspace.md)"
        )
    log(f"data: {escape(ws.default('data') or '')} (workspace default)")
    return default


@app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="A feature store: DATA/features/TAG.")],
    json_out: JsonOption = False,
) -> None:
    """Check a feature store: CLS std in the profile's range, NaN/Inf, constant or duplicated
    rows, counts against the source store, staleness. Errors exit 1; warnings do not."""
    from cellbench.features.check import check_feature_store

    report = check_feature_store(path)
    if json_out:
        print_json(report.to_dict())
    else:
        table = Table(title=escape(f"features check {path}"))
        for column in ("fold", "tiles", "CLS mean", "CLS std", "dup rows"):
            table.add_column(column, justify="right")
        for k, m in sorted(report.folds.items()):
            table.add_row(
                str(k),
                str(m.get("tiles")),
                _num(m.get("cls_mean")),
                _num(m.get("cls_std")),
                str(m.get("duplicate_cls_rows", "-")),
            )
        if report.folds:
            console.print(table)
        for f in report.findings:
            style = SEVERITY_STYLE.get(f.severity, "")
            where = "" if f.fold is None else f"fold {f.fold} "
            console.print(f"[{style}]{f.severity}[/] {where}{f.check}: {escape(f.message)}")
        verdict = "[green]ok[/]" if report.ok else "[bold red]failed[/]"
        console.print(f"{escape(str(path))}: {verdict} · {_count_errors(len(report.errors))}")
    if not report.ok:
        first = report.errors[0]
        raise CheckFailed(f"{_count_errors(len(report.errors))}, first: {first.message}")


def _count_errors(n: int) -> str:
    return f"{n} error" if n == 1 else f"{n} errors"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
