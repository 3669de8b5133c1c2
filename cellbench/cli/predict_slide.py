"""``cellbench predict`` on whole slides: check every slide first (readable, resolution known),
then run them one after the other through one loaded model, a progress bar per slide (tiles,
tiles/s, ETA), a table of nuclei per type at the end.

A slide whose metadata has no µm/px is refused before the model loads (exit 3, naming the file)
unless ``--mpp`` is given: reading it at a guessed resolution would shift every result silently.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cellbench.cli.common import err_console, log


def default_workers() -> int:
    """Post-processing workers: every CPU but the one the forward and readers run on, at most 8."""
    from cellbench.cpus import usable_cpus

    return max(0, min(8, usable_cpus() - 1))


def check_slides(slides: list[Path], options) -> None:
    """Open each slide and check its resolution; the first problem is a BadInputError (3)."""
    from cellbench.inference.slide_outputs import slide_folder
    from cellbench.inference.slide_reader import open_slide
    from cellbench.inference.tiling import check_mpp, parse_roi

    parse_roi(options.roi)
    if options.tissue not in (None, "auto", "none"):
        from cellbench.errors import UsageError

        raise UsageError(f"--tissue {options.tissue}: expected auto or none")
    for slide in slides:
        slide_folder(".", slide)  # a name that gives no output folder of its own: refused
        with open_slide(slide) as reader:
            check_mpp(slide, reader.mpp, options.mpp)


def check_organ_run(paths, organ_paths) -> None:
    """``--organ-run``, from the two runs' configs and feature-store manifests, before any
    model loads: a run whose task makes no per-tile decision is refused (exit 2), a head whose
    features came from another backbone than the nuclei run's (exit 3)."""
    from cellbench.cli.run_inputs import run_config, run_task
    from cellbench.config import config_from_dict
    from cellbench.inference import tile_head
    from cellbench.tasks import get_task

    tile_head.check_task(run_task(organ_paths), organ_paths.root.name)
    config = run_config(paths)
    # a run whose backbone runs on the fly (--online-features) may name a store of another
    # backbone: its own is compared once loaded, still before any tile is read
    if not get_task(run_task(paths)).needs_feature_store(
        config_from_dict(config, str(paths.config))
    ):
        return
    model = tile_head.config_identity(config)
    head = tile_head.config_identity(run_config(organ_paths))
    if model is not None and head is not None:
        tile_head.check_same_backbone(paths.root.name, model, organ_paths.root.name, head)


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tiles · {task.fields[rate]} tiles/s · ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


class _Progress:
    """``progress(done, total)`` for ``write_slide``: the bar, with this run's tiles/s (tiles
    resumed from the journal are not counted in the speed)."""

    def __init__(self, bar, task):
        self.bar, self.task = bar, task
        self.started = time.perf_counter()
        self.first: int | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.first is None:
            self.first = done
        elapsed = time.perf_counter() - self.started
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        self.bar.update(self.task, completed=done, total=total, rate=f"{rate:.1f}")


def predict_slides(
    loaded, slides: list[Path], folder: Path, options, head=None
) -> list[dict[str, Any]]:
    from cellbench.inference.slide import write_slide
    from cellbench.inference.tiling import parse_roi

    workers = default_workers() if options.workers is None else options.workers
    results = []
    for slide in slides:
        with _progress_bar() as bar:
            progress = _Progress(bar, bar.add_task(slide.name, total=None, rate="-"))
            result = write_slide(
                loaded,
                slide,
                folder,
                batch_size=options.batch_size,
                workers=workers,
                force=options.force,
                overwrite=options.overwrite,
                progress=progress,
                log=log,
                mpp=options.mpp,
                level=options.level,
                roi=parse_roi(options.roi),
                tissue=options.tissue or "auto",
                organ=head,
            )
        summary = result.summary
        organ = summary.get("organ")  # the per-tile head's summary (--organ-run)
        if result.skipped:
            done = result.folder / "summary.json"
            log(f"{slide}: already done ({done}; --force redoes it)")
        else:
            t = summary["timings"]
            log(
                f"{slide}: {summary['objects']} nuclei, {summary['tiles']['with_tissue']} tiles "
                f"in {t['wall']:.1f} s ({t['items_per_s']} tiles/s; bound by {t['bottleneck']})"
            )
            if organ and organ["majority"] is not None:
                log(
                    f"{slide}: tissue {organ['majority']} on {organ['majority_share']:.0%} of "
                    f"{organ['tiles']} tiles ({organ['run']})"
                )
        results.append(
            {
                "image": str(slide),
                "slide": True,
                "skipped": result.skipped,
                "nuclei": summary["objects"],
                "types": summary["counts"],
                "folder": str(result.folder),
                "files": summary["files"],
                "bottleneck": summary.get("bottleneck"),
                **({"organ": organ} if organ else {}),
            }
        )
    return results
