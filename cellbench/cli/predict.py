"""``cellbench predict --run RUN IMAGE|SLIDE...``: class and probability of each image, or, for a
nuclei run, its nuclei: an overlay PNG (contours coloured by type) and a QuPath GeoJSON per
image in ``--out`` (default ``runs/<run>/predict/``), and a table of counts per type.

Whole-slide images (SVS, NDPI, MRXS, tiled/pyramidal TIFF...; or any image given with a slide
option: --mpp, --level, --roi, --tissue) go through the streaming slide pipeline
(``cellbench.inference.slide``; docs/slides.md): outputs in ``--out/<slide>/``, resumable.

Every image is read before the model is loaded: if one cannot be read, the command exits 3 at
once, naming every unreadable file, and prints no partial result (a script never gets half a
list).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cellbench.cli.common import JsonOption, RunsDirOption, console, print_json, run_store
from cellbench.errors import UsageError
from cellbench.runs.layout import RunPaths


@dataclass
class SlideOptions:
    mpp: float | None
    level: int | None
    roi: str | None
    tissue: str | None
    workers: int | None
    force: bool
    batch_size: int

    def given(self) -> str | None:
        """The first slide-only option given (they send any image through the slide path)."""
        for name in ("mpp", "level", "roi", "tissue"):
            if getattr(self, name) is not None:
                return name
        return None


def _run_task(paths: RunPaths) -> str | None:
    """The run's task from its config.yaml, without loading the checkpoint (or torch)."""
    import yaml

    try:
        config = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return config.get("task") if isinstance(config, dict) else None


def predict_command(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Image files (PNG, JPEG, TIFF, ...) or whole slides (SVS, NDPI, MRXS, "
            "tiled/OME-TIFF, ...; nuclei runs).",
            show_default=False,
        ),
    ],
    run: Annotated[str, typer.Option("--run", "-r", help="Run id (2), name, folder or path.")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or last.")] = "best",
    top: Annotated[int, typer.Option("--top", min=1, help="Show the K most probable classes.")] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 32,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Nuclei runs: folder for <image>.overlay.png and <image>.geojson "
            "(default: runs/<run>/predict).",
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(
            "--mpp",
            help="Slides: µm per pixel of level 0, for a slide whose metadata has none "
            "(it overrides the metadata).",
            show_default=False,
        ),
    ] = None,
    level: Annotated[
        int | None,
        typer.Option(
            "--level",
            min=0,
            help="Slides: pyramid level to read (default: the coarsest one at least as fine "
            "as the run's µm/px).",
            show_default=False,
        ),
    ] = None,
    roi: Annotated[
        str | None,
        typer.Option(
            "--roi", help="Slides: only the region x,y,w,h (level-0 pixels).", show_default=False
        ),
    ] = None,
    tissue: Annotated[
        str | None,
        typer.Option(
            "--tissue",
            help="Slides: auto (skip background found by Otsu on saturation) or none.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Slides: post-processing processes (0: in the main process; default: the "
            "CPUs less one, at most 8).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Slides: redo a slide that already finished.")
    ] = False,
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Predict the class of each image with a trained run (its eval transform and weights), or
    the nuclei of each image with a nuclei run (overlay PNG + QuPath GeoJSON); whole slides are
    streamed tile by tile, resumable (GeoJSON, Parquet/CSV table, overlay, summary.json)."""
    if checkpoint not in ("best", "last"):
        raise UsageError(f"--checkpoint {checkpoint}: expected best or last")
    paths = run_store(runs_dir).resolve(run)
    slide_options = SlideOptions(mpp, level, roi, tissue, workers, force, batch_size)
    if _run_task(paths) == "nuclei":
        from cellbench.cli.predict_nuclei import predict_nuclei_command

        predict_nuclei_command(paths, images, checkpoint, device, out, json_out, slide_options)
        return
    if out is not None:
        raise UsageError("--out is for nuclei runs (overlay PNG and GeoJSON per image)")
    if slide_options.given():
        raise UsageError(f"--{slide_options.given()}: slide options are for nuclei runs")

    from cellbench.inference import load_model, predict_many, read_images  # torch: lazily

    pil_images = read_images(images)  # first: a bad path fails before the model is loaded
    loaded = load_model(paths, checkpoint=checkpoint, device=device)
    predictions = predict_many(loaded, pil_images, batch_size=batch_size)
    k = min(top, len(loaded.classes))
    if json_out:
        print_json(
            [
                {
                    "image": str(image),
                    "label": p.label,
                    "probability": p.probability,
                    "top": [{"label": c, "probability": q} for c, q in p.top(k)],
                }
                for image, p in zip(images, predictions, strict=True)
            ]
        )
        return
    table = Table(title=f"{paths.root.name} · {checkpoint}.pt · {len(images)} image(s)")
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    if k > 1:
        table.add_column(f"top {k}")
    for image, p in zip(images, predictions, strict=True):
        row = [str(image), p.label, f"{p.probability:.4f}"]
        if k > 1:
            row.append(", ".join(f"{c} {q:.3f}" for c, q in p.top(k)))
        table.add_row(*row)
    console.print(table)
