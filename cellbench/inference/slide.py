"""Predict a whole slide: ``predict_slide(model, path, out=...)`` writes its outputs, and
``predict_slide(model, path)`` yields its objects (nuclei) one by one.

    model = cellbench.load_model("digestive", device="cuda")
    summary = cellbench.predict_slide(model, "case.svs", out="predictions")   # files + summary
    for nucleus in cellbench.predict_slide(model, "case.svs", roi=(0, 0, 4096, 4096)):
        print(nucleus.id, nucleus.type, nucleus.x_um, nucleus.y_um, nucleus.area_um2)

The slide is read at the run's µm/px (``tiling``), background skipped (``tissue``), tiles
streamed through the device and a post-processing pool (``pipeline``), each object kept by the
tile whose core holds its centroid, and the outputs written as tiles finish (``slide_outputs``).

The model is any predictor with what the pipeline asks for (``SlidePredictor``): the nuclei
predictor has it; the pipeline never asks which task it serves.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cellbench import __version__
from cellbench.atomic import remove_stale_temps
from cellbench.errors import BadInputError
from cellbench.inference import slide_outputs
from cellbench.inference.pipeline import StageClock, cores_beside, stream
from cellbench.inference.slide_reader import SlideReader, open_slide
from cellbench.inference.tiling import (
    Geometry,
    Tile,
    check_mpp,
    plan_geometry,
    read_tile,
    tile_grid,
)
from cellbench.inference.tissue import TissueMask, read_thumbnail, thumbnail_factor, tissue_mask
from cellbench.runs.lock import RunLock
from cellbench.tile_jobs import core_detections, with_label

FORMAT = "cellbench-slide-prediction"
ID_NAMESPACE = uuid.UUID("6f1f3c52-2b7e-4f37-9a55-5c0c1d1e0b19")  # cellbench slide objects


@runtime_checkable
class SlidePredictor(Protocol):
    """What the slide pipeline needs from a loaded run (see ``NucleiModel``)."""

    tile_size: int

    @property
    def mpp(self) -> float: ...

    def forward_tiles(self, raw: Any) -> list[Any]: ...

    def tile_postprocessor(self) -> Callable[[Any, tuple[int, int, int, int]], list[dict]]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SlideObject:
    """One object (nucleus) of a slide, in slide level-0 pixels and µm."""

    id: str
    tile: str
    x_px: float
    y_px: float
    x_um: float
    y_um: float
    area_px: float
    area_um2: float
    type: str
    probability: float
    region: int
    touches_edge: bool
    color: tuple[int, int, int]
    geometry: dict[str, Any]
    tissue: str | None = None  # the per-tile head's decision for its tile (``organ=``)
    tissue_confidence: float | None = None


MARGIN_UM = 8.0  # a nucleus up to twice this across is never cut in two


def default_margin(tile: int, mpp: float) -> int:
    """Overlap on each side of a tile: ``MARGIN_UM`` (32 px at 0.25 µm/px: an eighth of a
    256-px tile), at least an eighth of the tile and at most a quarter (the core keeps half)."""
    return min(max(tile // 8, math.ceil(MARGIN_UM / mpp)), tile // 4)


def check_predictor(model: Any) -> SlidePredictor:
    if not isinstance(model, SlidePredictor):
        raise BadInputError(
            f"{getattr(model, 'checkpoint_path', 'this model')}: its task does not predict on "
            "slides (no tile forward/post-processing)"
        )
    return model


@dataclass
class SlidePlan:
    reader: SlideReader
    geometry: Geometry
    mask: TissueMask
    tiles: list[Tile]  # tiles with tissue, in order
    grid_tiles: int
    mpp_source: str


def plan_slide(
    model: SlidePredictor,
    path: str | os.PathLike,
    mpp: float | None = None,
    level: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
    tissue: str = "auto",
    margin: int | None = None,
    backend: str = "auto",
) -> SlidePlan:
    if tissue not in ("auto", "none"):
        raise BadInputError(f"--tissue {tissue}: expected auto or none")
    reader = open_slide(path, backend)
    try:
        slide_mpp = check_mpp(path, reader.mpp, mpp)
        tile = int(model.tile_size)
        geometry = plan_geometry(
            reader.levels,
            slide_mpp,
            float(model.mpp),
            tile,
            default_margin(tile, float(model.mpp)) if margin is None else margin,
            level,
            roi,
        )
        factor = thumbnail_factor(geometry)
        mask = tissue_mask(read_thumbnail(reader, geometry, factor), factor, tissue)
        grid = tile_grid(geometry)
        tiles = [t for t in grid if mask.keeps(t)]
    except BaseException:
        reader.close()
        raise
    source = "--mpp" if mpp is not None else "metadata"
    return SlidePlan(reader, geometry, mask, tiles, len(grid), source)


def attach_head(predictor: SlidePredictor, organ: Any) -> Any:
    """The per-tile head (``cellbench.inference.tile_head``) of ``organ`` (a run or a loaded
    head), checked against the predictor's backbone; None without one."""
    if organ is None:
        return None
    from cellbench.inference import tile_head

    if not all(hasattr(predictor, a) for a in ("forward_tiles_and_cls", "backbone_identity")):
        raise BadInputError(
            f"{getattr(predictor, 'checkpoint_path', 'this model')}: its forward gives no "
            "backbone CLS for a per-tile head"
        )
    head = organ if tile_head.is_tile_head(organ) else None
    if head is None:
        head = tile_head.load_tile_head(organ, device=getattr(predictor, "device", "cpu"))
    from cellbench.runs.layout import RunPaths

    run = getattr(predictor, "run", None)  # RunPaths, a run folder, or None (a bare .pt file)
    if isinstance(run, RunPaths):
        run = run.root
    name = Path(run or getattr(predictor, "checkpoint_path", "model")).name
    tile_head.check_same_backbone(
        name, predictor.backbone_identity(), head.run_name, head.backbone_identity()
    )
    return head


UNDECIDED = "undecided"  # a tile whose head output is not a number (NaN features): no tissue


def _decision(probabilities, classes: list[str]) -> dict[str, Any]:
    # rounded as the GeoJSON's probabilities: a resumed slide (other batches) writes the same
    if not all(math.isfinite(float(p)) for p in probabilities):  # NaN is no number: null
        return {"tissue": UNDECIDED, "confidence": None}
    k = int(probabilities.argmax())
    return {"tissue": classes[k], "confidence": round(float(probabilities[k]), 4)}


def _tile_record(plan: SlidePlan, index: int, tile: Tile, decision: dict, nuclei: int) -> dict:
    """One row of the per-tile table: where the tile lies in level-0 pixels (all of it, as the
    head saw it, and its core, where its nuclei were counted) and the head's decision."""
    g = plan.geometry
    r = g.to_level0
    x0, y0, x1, y1 = tile.core
    ox, oy = g.roi[0] + tile.u * r, g.roi[1] + tile.v * r
    return {
        "index": index,
        "tile": tile.key,
        "x_px": ox,
        "y_px": oy,
        "size_px": g.tile * r,
        "core_x_px": ox + x0 * r,
        "core_y_px": oy + y0 * r,
        "core_width_px": (x1 - x0) * r,
        "core_height_px": (y1 - y0) * r,
        "tissue": decision["tissue"],
        "confidence": decision["confidence"],
        "nuclei": nuclei,
    }


def _records(
    plan: SlidePlan, tile: Tile, detections: list[dict], name: str, decision: dict | None = None
) -> list[dict]:
    """Ids, µm, tissue region (and the tile's decision): what the worker could not know about
    the tile's objects."""
    g = plan.geometry
    r = g.to_level0
    out = []
    tissue = {}
    if decision is not None:
        tissue = {"tissue": decision["tissue"], "tissue_confidence": decision["confidence"]}
    for rank, d in enumerate(detections):
        u, v = (d["x"] - g.roi[0]) / r, (d["y"] - g.roi[1]) / r
        out.append(
            {
                **tissue,
                "id": str(uuid.uuid5(ID_NAMESPACE, f"{name}:{tile.key}:{rank}")),
                "tile": tile.key,
                "x_px": d["x"],
                "y_px": d["y"],
                "x_um": d["x"] * g.slide_mpp,
                "y_um": d["y"] * g.slide_mpp,
                "area_px": d["area"],
                "area_um2": d["area"] * g.slide_mpp**2,
                "type": d["cls"],
                "probability": d["probability"],
                "region": plan.mask.region_of(u, v),
                "touches_edge": d["touches_edge"],
                "color": list(d["color"]),
                "geometry": d["geometry"],
            }
        )
    return out


def _stream_records(
    model: SlidePredictor,
    plan: SlidePlan,
    tiles: list[Tile],
    name: str,
    batch_size: int,
    readers: int,
    workers: int,
    clock: StageClock,
    head: Any = None,
) -> Iterator[tuple[Tile, list[dict], dict | None]]:
    """(tile, its objects' records, the head's decision or None), tile by tile in order."""
    g = plan.geometry
    r = g.to_level0

    def read(tile: Tile):
        return read_tile(plan.reader, g, tile)

    def job(tile: Tile):
        """Plain numbers for the worker (a Tile would make it import this package)."""
        return tile.core, (g.roi[0] + tile.u * r, g.roi[1] + tile.v * r)

    # picklable, module-level: it runs in the post-processing processes
    post = functools.partial(core_detections, model.tile_postprocessor(), scale=r, size=g.tile)
    forward = model.forward_tiles
    if head is not None:
        # the head reads the CLS of the decoder's own backbone pass; its decision travels with
        # the tile's maps through the pool (a few floats) and comes back with its detections
        def forward(raw):
            payloads, cls = model.forward_tiles_and_cls(raw)
            decisions = [_decision(p, head.classes) for p in head.probabilities(cls)]
            return list(zip(payloads, decisions, strict=True))

        post = functools.partial(with_label, post)
    with cores_beside(workers, getattr(model, "device", None)):
        for tile, result in stream(
            tiles, read, forward, post, batch_size, readers, workers, clock, job=job
        ):
            detections, decision = result if head is not None else (result, None)
            yield tile, _records(plan, tile, detections, name, decision), decision


def _object(record: dict[str, Any]) -> SlideObject:
    fields = {k: v for k, v in record.items() if k not in ("color", "geometry")}
    return SlideObject(
        **fields, color=tuple(record["color"]), geometry=json.loads(record["geometry"])
    )


def iter_slide_objects(
    model: Any,
    path: str | os.PathLike,
    *,
    batch_size: int = 8,
    readers: int = 2,
    workers: int = 0,
    clock: StageClock | None = None,
    organ: Any = None,
    **options: Any,
) -> Iterator[SlideObject]:
    """The slide's objects, tile by tile (row by row), nothing written; with ``organ`` (a
    run or a loaded per-tile head) each carries its tile's tissue and confidence."""
    predictor = check_predictor(model)
    head = attach_head(predictor, organ)
    plan = plan_slide(predictor, path, **options)
    clock = clock or StageClock()
    try:
        for _, records, _ in _stream_records(
            predictor, plan, plan.tiles, Path(path).name, batch_size, readers, workers, clock, head
        ):
            for record in records:
                yield _object(record)
    finally:
        plan.reader.close()


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _plan_record(
    model: SlidePredictor, plan: SlidePlan, path: Path, tissue: str, head: Any = None
) -> dict:
    """What must match for a journal to be resumed: same slide file, model (and per-tile
    head), geometry, tiles."""
    tiles = hashlib.sha256(",".join(t.key for t in plan.tiles).encode()).hexdigest()
    # the checkpoint files too: new weights saved at the same path and epoch are another model
    weights = [getattr(m, "checkpoint_path", None) for m in (model, head) if m is not None]
    record = {
        "slide": _fingerprint(path),
        "model": model.describe(),
        "tile_head": head.describe() if head is not None else None,
        "weights": [_fingerprint(Path(w)) for w in weights if w and Path(w).is_file()],
        "geometry": plan.geometry.to_dict(),
        "tissue": tissue,
        "tiles": len(plan.tiles),
        "tiles_sha256": tiles,
    }
    return json.loads(json.dumps(record, default=str))  # as read back from plan.json


@dataclass
class SlideResult:
    slide: Path
    folder: Path
    summary: dict[str, Any]
    skipped: bool = False  # finished before: outputs kept (``force`` redoes it)


def summary_path(out: str | os.PathLike, path: str | os.PathLike) -> Path:
    return slide_outputs.slide_folder(out, path) / "summary.json"


def _plan_key(record: dict[str, Any]) -> str:
    """What a finished slide's summary keeps of its plan record: the per-tile head aside (a
    slide finished with one is not redone without it)."""
    kept = {k: v for k, v in record.items() if k != "tile_head"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _finished(summary_file: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("format") == FORMAT else None


def _why_again(summary: dict[str, Any], key: str, head: Any, folder: Path) -> str | None:
    """Why a finished slide is predicted again (None: it is done as asked)."""
    if summary.get("plan_sha256") != key:
        return "with other settings, another model or other weights"
    if head is not None and summary.get("tile_head") != head.describe():
        return f"without --organ-run {head.run_name}"
    return slide_outputs.outputs_intact(folder, summary.get("files") or {})


@dataclass
class _SlideRun:
    """One prediction of a slide under its folder's lock: the tiles into the journal, then the
    summary (``write_slide``)."""

    predictor: Any
    plan: SlidePlan
    path: Path
    head: Any
    batch_size: int
    readers: int
    workers: int

    def journal_tiles(
        self, journal: Path, done: int, progress: Callable[[int, int], None] | None
    ) -> StageClock:
        """Tiles ``done`` onward through the pipeline into the journal; the stages' clock."""
        plan, head = self.plan, self.head
        clock = StageClock()
        writer = slide_outputs.Journal(journal, done, tiles=head is not None)
        if progress:
            progress(done, len(plan.tiles))
        records = _stream_records(
            self.predictor,
            plan,
            plan.tiles[done:],
            self.path.name,
            self.batch_size,
            self.readers,
            self.workers,
            clock,
            head,
        )
        try:
            for position, (tile, found, decision) in enumerate(records, start=done):
                row = None
                if decision is not None:
                    row = _tile_record(plan, position, tile, decision, len(found))
                writer.add(position, found, row)
                if progress:
                    progress(position + 1, len(plan.tiles))
        finally:
            writer.commit()  # Ctrl-C or an error keeps every finished tile for the resume
        return clock

    def summary(
        self,
        key: str,
        tissue: str,
        done: int,
        outputs: dict[str, Any],
        clock: StageClock,
        started: float,
    ) -> dict[str, Any]:
        plan, g = self.plan, self.plan.geometry
        timings = clock.to_dict()
        return {
            "format": FORMAT,
            "cellbench_version": __version__,
            "slide": str(self.path),
            "reader": plan.reader.backend,
            "model": self.predictor.describe(),
            "tile_head": self.head.describe() if self.head is not None else None,
            "plan_sha256": key,
            "slide_mpp": g.slide_mpp,
            "mpp_source": plan.mpp_source,
            "run_mpp": g.run_mpp,
            "geometry": g.to_dict(),
            "tissue": {
                "mode": tissue,
                "saturation_threshold": plan.mask.threshold,
                "regions": int(plan.mask.regions.max()),
            },
            "tiles": {
                "grid": plan.grid_tiles,
                "with_tissue": len(plan.tiles),
                "run_now": len(plan.tiles) - done,
                "resumed_from": done,
            },
            **outputs,
            "timings": timings,
            "bottleneck": timings["bottleneck"],
            "seconds": round(time.perf_counter() - started, 3),
        }


def write_slide(
    model: Any,
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 8,
    readers: int = 2,
    workers: int = 0,
    force: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    tissue: str = "auto",
    organ: Any = None,
    **options: Any,
) -> SlideResult:
    """Predict a slide into ``out/<stem>/`` (see ``slide_outputs``), resuming from its journal;
    a finished slide (its ``summary.json`` is there) is skipped unless ``force``. ``organ``: a
    run (or a loaded head, ``tile_head.load_tile_head``) whose head decides each tile's tissue
    from the CLS of the model's own backbone pass: the per-tile table and ``summary["organ"]``.
    An existing file at an output's path that cellbench did not write is refused (exit 4)
    unless ``overwrite`` (``cellbench.outputs``)."""
    path = Path(path)
    folder = slide_outputs.slide_folder(out, path)
    summary_file = folder / "summary.json"
    log = log or (lambda message: None)
    predictor = check_predictor(model)
    head = attach_head(predictor, organ)  # before any tile is read
    wanted = head.describe() if head is not None else None
    started = time.perf_counter()
    plan = plan_slide(predictor, path, tissue=tissue, **options)
    try:
        record = _plan_record(predictor, plan, path, tissue, head)
        key = _plan_key(record)
        finished = None if force else _finished(summary_file)
        if finished is not None:
            why = _why_again(finished, key, head, folder)
            if why is None:
                return SlideResult(path, folder, finished, skipped=True)
            log(f"{path}: finished before, {why}: predicting it again")
        # one writer per slide folder: a second predict of the same slide into the same
        # --out waits for nothing and mixes nothing (exit 4, naming the holder). With the
        # lock ours, the temporary files a SIGKILLed writer left here are no one's
        slide_outputs.check_lock(folder)
        with RunLock(folder / slide_outputs.LOCK_NAME, what="slide"):
            slide_outputs.check_outputs(folder, path.stem, overwrite)
            journal = folder / ".journal"
            # after the check: a .journal that is a link or holds a user's file was refused
            remove_stale_temps(journal)  # the folder's own: RunLock's sweep
            previous = slide_outputs.read_plan(journal)
            if force or previous != record:
                if previous is not None and not force:
                    log(f"{path}: a journal of other settings or another model: starting over")
                summary_file.unlink(missing_ok=True)
                slide_outputs.reset_journal(journal, record)
            done = slide_outputs.finished_tiles(journal)
            if done:
                log(f"{path}: resuming after {done} of {len(plan.tiles)} finished tiles")
            run = _SlideRun(predictor, plan, path, head, batch_size, readers, workers)
            clock = run.journal_tiles(journal, done, progress)
            g = plan.geometry
            outputs = slide_outputs.assemble(
                journal,
                folder,
                path.stem,
                plan.mask.thumbnail,
                (g.roi[0], g.roi[1], g.to_level0 * plan.mask.factor),
                tile_head=wanted,
            )
            summary = run.summary(key, tissue, done, outputs, clock, started)
            # last: its presence means finished (the outputs are each listed in the ledger already)
            slide_outputs.write_summary(summary_file, summary)
            slide_outputs.shutil.rmtree(journal, ignore_errors=True)
            return SlideResult(path, folder, summary)
    finally:
        plan.reader.close()


def predict_slide(model: Any, path: str | os.PathLike, out: str | os.PathLike | None = None, **kw):
    """``out`` given: write the slide's outputs there and return a ``SlideResult``
    (``write_slide``); else an iterator of its ``SlideObject``s (``iter_slide_objects``).
    Options: mpp, level, roi (x, y, w, h level-0 pixels), tissue ("auto"/"none"), margin,
    batch_size, readers, workers (post-processing processes; 0 = in this thread), backend,
    organ (an organ run, or its loaded head: each tile's tissue and confidence)."""
    if out is None:
        return iter_slide_objects(model, path, **kw)
    return write_slide(model, path, out, **kw)
