"""``cellbench predict --run RUN IMAGE...``: class and probability of each image.

Every image is read before the model is loaded: if one cannot be read, the command exits 3 at
once, naming every unreadable file, and prints no partial result (a script never gets half a
list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cellbench.cli.common import JsonOption, RunsDirOption, console, print_json, run_store
from cellbench.errors import UsageError


def predict_command(
    images: Annotated[
        list[Path], typer.Argument(help="Image files (PNG, JPEG, TIFF, ...).", show_default=False)
    ],
    run: Annotated[str, typer.Option("--run", "-r", help="Run id (2), name, folder or path.")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or last.")] = "best",
    top: Annotated[int, typer.Option("--top", min=1, help="Show the K most probable classes.")] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 32,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Predict the class of each image with a trained run (its eval transform and weights)."""
    if checkpoint not in ("best", "last"):
        raise UsageError(f"--checkpoint {checkpoint}: expected best or last")
    paths = run_store(runs_dir).resolve(run)

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
