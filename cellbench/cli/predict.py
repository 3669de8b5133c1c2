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

from cellbench import outputs
from cellbench.cli.common import (
    JsonOption,
    MachineOption,
    OverwriteOption,
    RunsDirOption,
    console,
    log,
    print_json,
    run_store,
)
from cellbench.cli.run_inputs import check_inputs
from cellbench.errors import UsageError


@dataclass
class SlideOptions:
    mpp: float | None
    level: int | None
    roi: str | None
    tissue: str | None
    workers: int | None
    force: bool
    batch_size: int
    organ_run: str | None = None
    overwrite: bool = False

    def given(self) -> str | None:
        """The first slide-only option given (they send any image through the slide path)."""
        for name in ("mpp", "level", "roi", "tissue"):
            if getattr(self, name) is not None:
                return name
        return None


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
        int | None,
        typer.Option(
            "--batch-size", min=1, help="Images per forward pass (default 32, or --machine's)."
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Runs whose predictions are files (nuclei: <image>.overlay.png and "
            "<image>.geojson): their folder (default: runs/<run>/predict).",
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
    organ_run: Annotated[
        str | None,
        typer.Option(
            "--organ-run",
            help="Slides: an organ-head run on the same backbone as --run: each tile's tissue "
            "and its confidence, from the CLS of the same backbone pass (<slide>.tiles.csv/"
            ".parquet, summary.json 'organ').",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOption = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Predict although the run's feature store or data changed since it trained "
            "(recorded), and redo slides that already finished.",
        ),
    ] = False,
    machine: MachineOption = None,
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Predict the class of each image with a trained run (its eval transform and weights), or
    the nuclei of each image with a nuclei run (overlay PNG + QuPath GeoJSON); whole slides are
    streamed tile by tile, resumable (GeoJSON, Parquet/CSV table, overlay, summary.json)."""
    if checkpoint not in ("best", "last"):
        raise UsageError(f"--checkpoint {checkpoint}: expected best or last")
    from cellbench.machines import machine_batch

    batch_size = machine_batch(machine, batch_size, "eval", default=32)
    paths = run_store(runs_dir).resolve(run)
    check_inputs(paths, force, "predict")  # before any image or model is read
    slide_options = SlideOptions(
        mpp, level, roi, tissue, workers, force, batch_size, organ_run, overwrite
    )

    from cellbench.cli.predict_slide import check_organ_run, check_slides, predict_slides
    from cellbench.inference import load_model, read_images  # torch: lazily
    from cellbench.inference.slide_reader import is_slide

    as_slides = slide_options.given() is not None
    slides = [Path(i) for i in images if as_slides or is_slide(i)]
    # first: a bad file or a slide without resolution fails before the model is loaded
    check_slides(slides, slide_options)
    images = [Path(i) for i in images if Path(i) not in slides]
    organ_paths = None
    if organ_run is not None:
        if not slides:
            raise UsageError("--organ-run: decides the tiles of whole slides; no slide given")
        organ_paths = run_store(runs_dir).resolve(organ_run)
        check_inputs(organ_paths, force, "predict")
        check_organ_run(paths, organ_paths)  # a head on another backbone: refused here

    pil_images = read_images(images)  # first: a bad path fails before the model is loaded
    loaded = load_model(paths, checkpoint=checkpoint, device=device)
    if out is not None and not loaded.writes_files:
        raise UsageError(f"--out: {paths.root.name}'s predictions are a table, not files per image")
    stems = [Path(image).stem for image in images]
    if loaded.writes_files:
        folders = [slide.stem for slide in slides]  # a slide's outputs: <out>/<its stem>/
        repeated = sorted({s for names in (stems, folders) for s in names if names.count(s) > 1})
        if repeated:
            raise UsageError(f"two inputs named '{repeated[0]}': their outputs would collide")
    if overwrite and not loaded.writes_files:
        raise UsageError(f"--overwrite: {paths.root.name}'s predictions are a table, not files")
    folder = Path(out) if out is not None else paths.root / "predict"
    # every output is checked before anything is written: a user's tile.geojson next to the
    # image (hand annotations) is refused here, not replaced half-way (docs/outputs.md)
    for stem in stems:
        for name in loaded.output_names(stem):
            outputs.check(folder / name, overwrite=overwrite, option="--out")
    from cellbench.inference.slide_outputs import check_outputs, slide_folder

    for slide in slides:  # a slide's outputs go to their own folder, <out>/<slide stem>/
        check_outputs(slide_folder(folder, slide), slide.stem, overwrite)
    if slides and not loaded.predicts_slides:
        raise UsageError(f"{slides[0]}: {paths.root.name}'s task does not predict whole slides")
    for note in loaded.notes():
        log(note)
    predictions = loaded.predict_many(pil_images, batch_size=batch_size)
    k = min(top, max(len(loaded.classes), 1))
    rows, summaries = [], []
    for image, stem, pil, p in zip(images, stems, pil_images, predictions, strict=True):
        files = loaded.save_outputs(p, pil, folder, stem) if loaded.writes_files else {}
        rows.append({"image": str(image), **p.to_dict(k), **files})
        summaries.append(
            {**p.summary(k), **({"files": "\n".join(files.values())} if files else {})}
        )
    names = [str(image) for image in images]
    if slides:
        head = None
        if organ_paths is not None:
            from cellbench.inference.tile_head import load_tile_head

            head = load_tile_head(organ_paths, checkpoint=checkpoint, device=loaded.device)
            log(f"tissue per tile: {organ_paths.root.name} (temperature {head.temperature:.3g})")
        slide_rows = predict_slides(loaded, slides, folder, slide_options, head)
        rows += slide_rows
        summaries += [{**loaded.slide_summary(r), "files": r["folder"]} for r in slide_rows]
        names += [r["image"] for r in slide_rows]
    if json_out:
        print_json(loaded.json_output(paths.root.name, rows))
        return
    table = Table(title=f"{paths.root.name} · {checkpoint}.pt · {len(names)} image(s)")
    table.add_column("image")
    for column in summaries[0] if summaries else ():
        table.add_column(
            column,
            justify="left" if column in ("class", "files") or column.startswith("top") else "right",
        )
    for name, summary in zip(names, summaries, strict=True):
        table.add_row(name, *summary.values())
    console.print(table)
