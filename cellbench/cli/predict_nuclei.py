"""``cellbench predict`` for nuclei runs: overlay PNG + QuPath GeoJSON per image, counts table;
slides go through ``cli/predict_slide.py`` with the same loaded model.

Outputs are named after each image's file name (``tile.png`` -> ``tile.overlay.png`` and
``tile.geojson``), written atomically; two images with the same name are refused before
anything runs, so no output silently replaces another.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from cellbench.cli.common import console, log, print_json
from cellbench.errors import UsageError
from cellbench.runs.layout import RunPaths


def predict_nuclei_command(
    paths: RunPaths,
    images: list[Path],
    checkpoint: str,
    device: str,
    out: Path | None,
    json_out: bool,
    slide_options,
) -> None:
    import numpy as np

    from cellbench.cli.predict_slide import check_slides, predict_slides
    from cellbench.data.families import NUCLEUS_TYPES
    from cellbench.inference import load_model, read_images
    from cellbench.inference.slide_reader import is_slide
    from cellbench.tasks.nuclei.export.geojson import nuclei_geojson, write_geojson
    from cellbench.tasks.nuclei.export.overlay import write_overlay_png
    from cellbench.tasks.nuclei.predictor import predict_nuclei

    stems = [Path(image).stem for image in images]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise UsageError(f"two images named '{repeated[0]}': their outputs would collide")
    as_slides = slide_options.given() is not None
    slides = [Path(i) for i in images if as_slides or is_slide(i)]
    tiles = [Path(i) for i in images if Path(i) not in slides]
    # first: a bad file or a slide without resolution fails before the model is loaded
    check_slides(slides, slide_options)
    pil_images = read_images(tiles)
    loaded = load_model(paths, checkpoint=checkpoint, device=device)
    log(f"post-processing: {loaded.postproc_source}")
    folder = Path(out) if out is not None else paths.root / "predict"
    results = predict_slides(loaded, slides, folder, slide_options) if slides else []
    for image, pil in zip(tiles, pil_images, strict=True):
        stem = image.stem
        array = np.asarray(pil)
        prediction = predict_nuclei(loaded, array)
        types = prediction.type_dict()
        overlay_path = folder / f"{stem}.overlay.png"
        geojson_path = folder / f"{stem}.geojson"
        write_overlay_png(overlay_path, array, prediction.instances, types)
        write_geojson(geojson_path, nuclei_geojson(prediction.instances, types))
        results.append(
            {
                "image": str(image),
                "nuclei": prediction.count,
                "types": prediction.counts(),
                "overlay": str(overlay_path),
                "geojson": str(geojson_path),
            }
        )
    if json_out:
        print_json({"run": paths.root.name, "postproc": loaded.postproc_source, "images": results})
        return
    table = Table(title=f"{paths.root.name} · {checkpoint}.pt · {len(images)} image(s)")
    table.add_column("image")
    table.add_column("nuclei", justify="right")
    for name in NUCLEUS_TYPES:
        table.add_column(name[:5], justify="right")
    table.add_column("files")
    for row in results:
        files = row["folder"] if row.get("slide") else f"{row['overlay']}\n{row['geojson']}"
        table.add_row(
            row["image"],
            str(row["nuclei"]),
            *(str(row["types"].get(name, 0)) for name in NUCLEUS_TYPES),
            files,
        )
    console.print(table)
