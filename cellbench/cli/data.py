"""``cellbench data synth|prepare|check|stats``: make, convert, validate and describe datasets.

Only light modules are imported here; numpy-heavy data modules load inside the commands, and
nothing here imports torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cellbench.cli.common import JsonOption, OverwriteOption, console, err_console, log, print_json
from cellbench.cli.lists import list_options, parse_folds
from cellbench.errors import BadInputError, CheckFailed, UsageError

app = typer.Typer(help="Make, convert, check and describe datasets.", no_args_is_help=True)

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@contextlib.contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator:
    """Yield a callback (fold, done, total) drawing one Rich bar per fold on stderr."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[int, int] = {}

    def update(fold: int, done: int, total: int) -> None:
        if fold not in tasks:
            tasks[fold] = bar.add_task(f"{label} fold {fold}", total=total)
        bar.update(tasks[fold], completed=done)

    with bar:
        yield update


FOLDS_HELP = "Folds to use, e.g. --folds 1 2 3 (or 1,2,3)."


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    kind: Annotated[
        str,
        typer.Option(
            help="pannuke: raw PanNuke layout (nuclei). shapes: an image-classification "
            "folder of class subfolders (circle, cross, square, triangle)."
        ),
    ] = "pannuke",
    folds: Annotated[int, typer.Option(help="Number of folds (pannuke).", min=1)] = 3,
    tiles: Annotated[
        int, typer.Option(help="Tiles per fold (pannuke) or images per class (shapes).", min=1)
    ] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    size: Annotated[
        int | None,
        typer.Option(help="Image side in pixels (default: 256 pannuke, 32 shapes).", min=8),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="pannuke: official ('Fold 1/images/fold1/...', default) or flat ('fold1/...'). "
            "shapes: flat (class folders, default) or split (train/ val/ test/)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Generate a dataset: PanNuke-like tiles (H&E-like, 5 nucleus types, 19 tissues) or shapes."""
    from cellbench.outputs import check_location

    check_location(out, "--out")  # never inside another store, a run or a sweep
    if kind == "shapes":
        _synth_shapes(out, tiles, size or 32, seed, layout or "flat", force, json_out)
        return
    if kind != "pannuke":
        raise UsageError(f"--kind {kind}: expected pannuke or shapes")
    from cellbench.data.synth import synth

    size = size or 256
    with _progress("synth") as progress:
        synth(
            out,
            folds=folds,
            tiles=tiles,
            seed=seed,
            size=size,
            layout=layout or "official",
            force=force,
            progress=progress,
        )
    result = {"out": str(out), "folds": folds, "tiles": tiles, "size": size, "seed": seed}
    if json_out:
        print_json(result)
    else:
        console.print(
            f"Wrote {folds} folds x {tiles} tiles ({size}x{size}) to [bold]{escape(str(out))}[/]. "
            f"Next: [bold]cellbench data prepare --pannuke {escape(str(out))} --out <store>[/]"
        )


def _synth_shapes(
    out: Path, per_class: int, size: int, seed: int, layout: str, force: bool, json_out: bool
) -> None:
    import shutil

    from cellbench.data.classify.shapes import MANIFEST, foreign_entries, write_shapes_dataset

    if force and (out / MANIFEST).is_file():
        foreign = foreign_entries(out)
        if foreign:  # the folder goes whole: only when it holds nothing but the generator's files
            raise BadInputError(
                f"{foreign[0]}: not written by data synth, inside {out} that --force would "
                "replace; move it out first"
            )
        shutil.rmtree(out)  # only ever a generated shapes dataset (it has our manifest)

    made = write_shapes_dataset(
        out, n_per_class=per_class, image_size=size, seed=seed, layout=layout
    )
    result = {
        "out": str(out),
        "kind": "shapes",
        "classes": made.classes,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "created": made.created,
    }
    if json_out:
        print_json(result)
        return
    verb = "Wrote" if made.created else "Up to date:"
    console.print(
        f"{verb} {len(made.classes)} classes x {per_class} images ({size}x{size}) in "
        f"[bold]{escape(str(out))}[/]. "
        f"Next: [bold]cellbench train --profile demo --data {escape(str(out))}[/]"
    )


@app.command("prepare", cls=list_options("--folds"))
def prepare_command(
    pannuke: Annotated[Path, typer.Option("--pannuke", help="Raw PanNuke folder (either layout).")],
    out: Annotated[Path, typer.Option("--out", help="Canonical store to write.")],
    folds: Annotated[
        list[str] | None,
        typer.Option("--folds", help=FOLDS_HELP + " Default: every fold found under --pannuke."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Convert even if up to date.")] = False,
    chunk: Annotated[int, typer.Option(help="Tiles per chunk (bounds memory).", min=1)] = 32,
    json_out: JsonOption = False,
) -> None:
    """Convert raw PanNuke folds into the canonical store (uint8, int32, float32 HV)."""
    from cellbench.data.prepare import prepare
    from cellbench.outputs import check_location

    check_location(out, "--out")  # never inside another store, a run or a sweep

    selected = parse_folds(folds)  # None: the folds found
    if not pannuke.is_dir():
        raise BadInputError(f"{pannuke}: PanNuke folder not found")
    with _progress("prepare") as progress:
        reports = prepare(pannuke, out, folds=selected, force=force, chunk=chunk, progress=progress)
    from cellbench.workspace.defaults import record_default

    record_default("data", out, say=log)  # when the workspace has none yet
    if json_out:
        print_json({"out": str(out), "folds": [r.to_dict() for r in reports]})
        return
    if all(r.status == "up to date" for r in reports):
        console.print(
            f"{escape(str(out))}: nothing to do, folds {[r.fold for r in reports]} are up to date "
            "(use --force)."
        )
        return
    table = Table(title=escape(f"Store {out}"))
    columns = ("fold", "status", "tiles", "nuclei", "overlap", "reused", "split", "empty", "time")
    for column in columns:
        table.add_column(column, justify="left" if column == "status" else "right")
    for r in reports:
        q = r.quirks
        table.add_row(
            str(r.fold),
            r.status,
            str(r.tiles),
            str(r.nuclei),
            str(q.get("overlap_pixels", 0)),
            str(q.get("reused_ids", 0)),
            str(q.get("split_ids", 0)),
            str(q.get("empty_tiles", 0)),
            f"{r.seconds:.1f}s" if r.status == "prepared" else "-",
        )
    console.print(table)
    console.print(
        "[dim]overlap: pixels claimed by two channels, later channel kept · reused: ids in two "
        "channels, relabelled apart · split: ids in several pieces, kept as one nucleus · "
        "empty: tiles without nuclei[/]"
    )


@app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="Raw PanNuke folder or canonical store.")],
    chunk: Annotated[int, typer.Option(help="Tiles per chunk (bounds memory).", min=1)] = 32,
    json_out: JsonOption = False,
) -> None:
    """Validate a dataset: dtypes, shapes, NaN, ranges, ids vs types, tissues, duplicates.

    Errors exit 1; warnings do not.
    """
    from cellbench.data.check import check_dataset

    with _progress("check", enabled=not json_out) as progress:
        report = check_dataset(path, chunk=chunk, progress=progress)
    if json_out:
        print_json(report.to_dict())
    else:
        table = Table(title=escape(f"data check {path} ({report.kind}, {report.tiles} tiles)"))
        for column in ("severity", "fold", "check", "message"):
            table.add_column(column, overflow="fold")
        for f in report.findings:
            style = SEVERITY_STYLE.get(f.severity, "")
            table.add_row(
                f"[{style}]{f.severity}[/]",
                "-" if f.fold is None else str(f.fold),
                escape(f.check),
                escape(f.message),
            )
        if report.findings:
            console.print(table)
        verdict = "[green]ok[/]" if report.ok else "[bold red]failed[/]"
        console.print(
            f"{escape(str(path))}: {verdict} · {report.count('error')} errors, "
            f"{report.count('warning')} warnings, {report.count('info')} notes"
        )
    if not report.ok:
        first = next(f for f in report.findings if f.severity == "error")
        raise CheckFailed(f"{report.count('error')} errors, first: {first.message}")


def _is_nuclei_dataset(path: Path) -> bool:
    from cellbench.data.pannuke import is_raw_dataset
    from cellbench.data.store import is_store

    return path.is_dir() and (is_store(path) or is_raw_dataset(path))


def _class_stats(path: Path, json_out: bool) -> None:
    from cellbench.data.classify.stats import class_counts

    counts = class_counts(path)
    if json_out:
        print_json({"path": str(path), "kind": "classify", "splits": counts})
        return
    splits = list(counts)
    classes = sorted({c for per in counts.values() for c in per})
    table = Table(title=escape(f"Classes in {path}"))
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for c in classes:
        row = [counts[s].get(c, 0) for s in splits]
        table.add_row(escape(c), *map(str, row), str(sum(row)))
    totals = [sum(counts[s].values()) for s in splits]
    table.add_row("[bold]total[/]", *map(str, totals), str(sum(totals)))
    console.print(table)


@app.command("stats")
def stats_command(
    path: Annotated[Path, typer.Argument(help="Nuclei dataset (raw or store) or classify source.")],
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG summary plot.")] = None,
    family: Annotated[
        str | None, typer.Option("--family", help="Only the tiles of this organ family.")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", help="Use this profile's data.families (for --family and the table)."
        ),
    ] = None,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Counts per fold, tissue, family and nucleus type; nucleus sizes (or class counts)."""
    from cellbench import outputs

    if plot is not None:  # before reading the dataset: a refused path costs nothing
        outputs.check(plot, overwrite=overwrite, option="--plot")
    if not _is_nuclei_dataset(path):
        if family or plot or profile:
            raise UsageError("--family, --profile and --plot apply to nuclei datasets only")
        _class_stats(path, json_out)
        return
    from cellbench.data.families import NUCLEUS_TYPES, check_family
    from cellbench.data.stats import dataset_stats, plot_stats

    families = None
    if profile:
        from cellbench.config import load_config

        families = load_config(profile=profile).data.families
    if family:
        check_family(family, families)
    stats = dataset_stats(path, families=families, family=family)
    if plot:
        plot_stats(stats, plot)
        outputs.record(plot)
        log(f"plot written to {escape(str(plot))}")
    if json_out:
        print_json(stats.to_dict())
        return
    suffix = f", family {family}" if family else ""
    folds = Table(title=escape(f"{path} ({stats.kind}{suffix})"))
    for column in ("fold", "tiles", "nuclei", "empty tiles"):
        folds.add_column(column, justify="right")
    for fold, row in stats.folds.items():
        folds.add_row(str(fold), str(row["tiles"]), str(row["nuclei"]), str(row["empty_tiles"]))
    console.print(folds)
    for title, column, rows in (
        ("Tissues", "tissue", stats.tissues),
        ("Families", "family", stats.families),
    ):
        table = Table(title=title)
        table.add_column(column)
        table.add_column("tiles", justify="right")
        table.add_column("nuclei", justify="right")
        for name, row in rows.items():
            table.add_row(escape(name), str(row["tiles"]), str(row["nuclei"]))
        console.print(table)
    types = Table(title="Nucleus types (area in pixels)")
    for column in ("type", "nuclei", "mean", "p5", "median", "p95"):
        types.add_column(column, justify="left" if column == "type" else "right")
    for name in NUCLEUS_TYPES:
        row = stats.types[name]
        types.add_row(
            name,
            str(row["nuclei"]),
            f"{row['area_mean']:.0f}",
            f"{row['area_p5']:.0f}",
            f"{row['area_median']:.0f}",
            f"{row['area_p95']:.0f}",
        )
    console.print(types)


@app.command("tiles")
def tiles_command(
    store: Annotated[Path, typer.Argument(help="Canonical store (from data prepare/synth).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG files.")],
    fold: Annotated[
        int, typer.Option("--fold", min=1, help="Fold to read (3: the test fold).")
    ] = 3,
    family: Annotated[
        str | None, typer.Option("--family", help="Only tiles of this organ family's tissues.")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="How many tiles.")] = 3,
    json_out: JsonOption = False,
) -> None:
    """Write a few tiles of a store as PNG files (images to try `cellbench predict` on)."""
    from cellbench.data.tiles import write_tiles

    paths = write_tiles(store, fold, out, family, count)
    if not paths:
        raise BadInputError(f"{store}: fold {fold} has no tile of family {family}")
    if json_out:
        print_json({"tiles": [str(p) for p in paths]})
        return
    for path in paths:
        console.print(escape(str(path)), highlight=False)
