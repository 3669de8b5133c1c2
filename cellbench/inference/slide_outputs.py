"""A slide's outputs, written as the tiles finish and never held whole in memory.

While the slide runs, finished tiles go to a *journal* (``.journal/`` in the slide's folder):
Parquet parts (``pyarrow``), each holding the objects of a contiguous run of tiles, written
atomically, committed every ``COMMIT_SECONDS`` or ``COMMIT_TILES`` tiles, whichever comes first (one
file per tile would be 100,000 files on a slide; a kill loses at most that much work). The pipeline
returns tiles in order, so the finished tiles are always a prefix: an interrupted slide resumes at
the first tile no part holds, and a part is either there whole or not at all.

When every tile is done, the parts are read back one at a time and streamed into the outputs:

    <stem>.geojson      FeatureCollection for QuPath: one detection per object, top-level "id"
                        (a UUID derived from slide, tile and rank: stable across reruns),
                        classification name + colour, measurements (area µm² and px, type
                        probability, centroid µm), slide level-0 pixel coordinates
    <stem>.parquet      the table: id, tile, centroid (slide pixels and µm), area (px, µm²),
    <stem>.csv          type, probability, tissue region, touches_edge
    <stem>.overlay.png  the tissue thumbnail with every object as a dot of its type's colour
    summary.json        counts per type and per tissue region, timings, files (written last:
                        its presence means the slide is finished)

With a per-tile head (``predict --organ-run``), the parts also hold each tile's decision, and:

    <stem>.tiles.parquet  one row per tile: index, place (level-0 pixels: the tile and its core),
    <stem>.tiles.csv      tissue, confidence, nuclei counted in the core
    <stem>.tiles.geojson  one QuPath *tile* object per tile core, classified by its tissue
    summary.json          "organ": run, temperature, tiles per tissue, the majority and its share
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.atomic import atomic_write
from cellbench.errors import RunConflict, UsageError
from cellbench.outputs import file_in_the_way

LOCK_NAME = ".cellbench.lock"  # held in a slide's folder while a process writes it
COMMIT_SECONDS = 2.0
COMMIT_TILES = 32
COMMIT_ROWS = 50_000
ROW_GROUP = 65_536  # rows per Parquet row group of the final table
PART_RE = re.compile(r"part-(\d{9})-(\d{9})\.parquet")
TABLE_COLUMNS = (
    "id",
    "tile",
    "x_px",
    "y_px",
    "x_um",
    "y_um",
    "area_px",
    "area_um2",
    "type",
    "probability",
    "region",
    "touches_edge",
)


TISSUE_COLUMNS = ("tissue", "tissue_confidence")  # with a per-tile head (``--organ-run``)
TILE_COLUMNS = (
    "index",
    "tile",
    "x_px",
    "y_px",
    "size_px",
    "core_x_px",
    "core_y_px",
    "core_width_px",
    "core_height_px",
    "tissue",
    "confidence",
    "nuclei",
)
TILES_KEY = b"cellbench.tiles"  # a part's per-tile rows, in its Parquet metadata
CONFIDENCE_DIGITS = 4  # as the GeoJSON's type probability: stable across batchings


def _tile_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("tile", pa.string()),
            ("x_px", pa.float64()),
            ("y_px", pa.float64()),
            ("size_px", pa.float64()),
            ("core_x_px", pa.float64()),
            ("core_y_px", pa.float64()),
            ("core_width_px", pa.float64()),
            ("core_height_px", pa.float64()),
            ("tissue", pa.string()),
            ("confidence", pa.float64()),
            ("nuclei", pa.int64()),
        ]
    )


def _schema(with_geometry: bool, with_tissue: bool = False):
    import pyarrow as pa

    fields = [
        ("id", pa.string()),
        ("tile", pa.string()),
        ("x_px", pa.float64()),
        ("y_px", pa.float64()),
        ("x_um", pa.float64()),
        ("y_um", pa.float64()),
        ("area_px", pa.float64()),
        ("area_um2", pa.float64()),
        ("type", pa.string()),
        ("probability", pa.float64()),
        ("region", pa.int32()),
        ("touches_edge", pa.bool_()),
    ]
    if with_tissue:
        fields += [("tissue", pa.string()), ("tissue_confidence", pa.float64())]
    if with_geometry:
        fields += [("color", pa.list_(pa.int32())), ("geometry", pa.string())]
    return pa.schema(fields)


def _round(value: float) -> float:
    return round(float(value), CONFIDENCE_DIGITS)


class Journal:
    """The finished tiles of a slide: ``add`` each tile in order, ``commit`` writes a part.

    With ``tiles`` (a per-tile head), each tile also gives one small row (its decision, its
    place, its nuclei count), kept in the part's own metadata: a tile with no nucleus still has
    its decision, and a part holds its tiles' rows and objects together or not at all."""

    def __init__(self, folder: Path, start: int, tiles: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start = self.end = start  # tiles [start, end) are waiting in memory
        self.rows: list[dict[str, Any]] = []
        self.tiles = tiles
        self.tile_rows: list[dict[str, Any]] = []
        self.last_commit = time.monotonic()

    def add(
        self, position: int, records: list[dict[str, Any]], tile: dict[str, Any] | None = None
    ) -> None:
        if position != self.end:
            raise RuntimeError(f"tile {position} out of order (expected {self.end})")
        if self.tiles != (tile is not None):
            state = "missing" if self.tiles else "unexpected"
            raise RuntimeError(f"tile {position}: its per-tile row is {state}")
        self.rows.extend(records)
        if tile is not None:
            self.tile_rows.append(tile)
        self.end += 1
        if (
            len(self.rows) >= COMMIT_ROWS
            or self.end - self.start >= COMMIT_TILES
            or time.monotonic() - self.last_commit >= COMMIT_SECONDS
        ):
            self.commit()

    def commit(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.end == self.start:
            return
        schema = _schema(True, self.tiles)
        columns = {name: [row[name] for row in self.rows] for name in schema.names}
        table = pa.table(columns, schema=schema)
        if self.tiles:
            rows = json.dumps(self.tile_rows, separators=(",", ":")).encode()
            table = table.replace_schema_metadata({TILES_KEY: rows})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        name = f"part-{self.start:09d}-{self.end:09d}.parquet"
        atomic_write(self.folder / name, lambda fh: fh.write(buffer.getvalue()))
        self.start, self.rows, self.last_commit = self.end, [], time.monotonic()
        self.tile_rows = []


def parts(folder: Path) -> list[Path]:
    """The journal's parts that form a prefix of the tiles (0..k), in order."""
    found = []
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            match = PART_RE.fullmatch(path.name)
            if match:
                found.append((int(match[1]), int(match[2]), path))
    prefix, end = [], 0
    for start, stop, path in sorted(found):
        if start != end:
            break  # never happens with one writer; a gap ends what can be trusted
        prefix.append(path)
        end = stop
    return prefix


def finished_tiles(folder: Path) -> int:
    """How many tiles (a prefix of the slide's tile list) the journal holds."""
    found = parts(folder)
    return int(PART_RE.fullmatch(found[-1].name)[2]) if found else 0


def read_plan(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "plan.json").read_text())
    except (OSError, ValueError):
        return None


def reset_journal(folder: Path, plan: dict) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atomic_write(folder / "plan.json", lambda fh: fh.write(json.dumps(plan, indent=2).encode()))


def _part_tables(folder: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for path in parts(folder):
        yield pq.read_table(path).replace_schema_metadata(None)


def _part_tile_tables(folder: Path) -> Iterator[Any]:
    """The per-tile rows of each part (from its metadata: the footer alone is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _tile_schema()
    for path in parts(folder):
        rows = json.loads((pq.read_schema(path).metadata or {}).get(TILES_KEY, b"[]"))
        yield pa.Table.from_pylist(rows, schema=schema)


def _feature(row: dict[str, Any]) -> str:
    """One GeoJSON Feature as text (geometry is already JSON text from the worker)."""
    measurements = {
        "area (µm²)": round(row["area_um2"], 3),
        "area (px)": round(row["area_px"], 1),
        "centroid x (µm)": round(row["x_um"], 3),
        "centroid y (µm)": round(row["y_um"], 3),
    }
    if row["probability"] is not None and not math.isnan(row["probability"]):
        measurements["type probability"] = round(row["probability"], 4)
    if row.get("tissue_confidence") is not None:
        measurements["tissue confidence"] = _round(row["tissue_confidence"])
    properties = {
        "objectType": "detection",
        "classification": {"name": row["type"], "color": list(row["color"])},
        "isLocked": False,
        "measurements": measurements,
        "tile": row["tile"],
        "region": row["region"],
    }
    if row.get("tissue") is not None:
        properties["tissue"] = row["tissue"]
    head = json.dumps({"type": "Feature", "id": row["id"]}, ensure_ascii=False)[:-1]
    props = json.dumps(properties, ensure_ascii=False)
    return f'{head}, "geometry": {row["geometry"]}, "properties": {props}}}'


def _parquet_writer(tables: Callable[[], Iterator[Any]], schema) -> Callable[[Any], None]:
    """Write ``tables()`` as one Parquet file in row groups of ``ROW_GROUP`` rows whatever the
    journal's parts: a resumed slide (other part boundaries) gives the same bytes as an
    uninterrupted one."""

    def write(fh) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pending, rows = [], 0
        with pq.ParquetWriter(fh, schema) as writer:
            for table in tables():
                pending.append(table.select(schema.names))
                rows += table.num_rows
                if rows >= ROW_GROUP:
                    merged = pa.concat_tables(pending)
                    whole = rows - rows % ROW_GROUP
                    writer.write_table(merged.slice(0, whole), row_group_size=ROW_GROUP)
                    pending, rows = [merged.slice(whole)], rows - whole
            if rows or not pending:
                merged = pa.concat_tables(pending) if pending else schema.empty_table()
                writer.write_table(merged, row_group_size=ROW_GROUP)

    return write


def _csv_writer(tables: Callable[[], Iterator[Any]], schema) -> Callable[[Any], None]:
    def write(fh) -> None:
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(fh, schema) as writer:
            for table in tables():
                writer.write_table(table.select(schema.names))

    return write


# tissue colours in QuPath, by the head's class index (matplotlib's tab20, dark shades first)
TISSUE_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


def _tile_feature(row: dict[str, Any], color: list[int]) -> str:
    """A QuPath *tile* object: the tile's core (cores partition the slide), classified by the
    head's decision."""
    x, y = row["core_x_px"], row["core_y_px"]
    w, h = row["core_width_px"], row["core_height_px"]
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "tile",
            "classification": {"name": row["tissue"], "color": color},
            "isLocked": False,
            "measurements": {"tissue confidence": row["confidence"], "nuclei": row["nuclei"]},
            "tile": row["tile"],
        },
    }
    return json.dumps(feature, ensure_ascii=False)


# the files a slide's folder gets (summary.json last): checked against the output ledger before
# anything is written, listed in it after (cellbench.outputs), like every other --out file
OUTPUT_SUFFIXES = (".geojson", ".parquet", ".csv", ".overlay.png")
TILE_SUFFIXES = (".tiles.parquet", ".tiles.csv", ".tiles.geojson")


def slide_folder(out: str | Path, slide: str | Path) -> Path:
    """``out/<slide stem>/``, where a slide's outputs go; a stem that is no folder name of its
    own (``...tif`` has stem ``..``) would put them beside or above ``out``: refused (exit 2)."""
    stem = Path(slide).stem
    if stem in ("", ".", ".."):
        raise UsageError(
            f"{slide}: a slide named '{stem}' gets no output folder of its own under --out "
            "(rename or link it with a plain name)"
        )
    folder = Path(out) / stem
    blocking = file_in_the_way(folder)
    if blocking is not None:
        raise RunConflict(
            f"{blocking}: a file where the folder of {Path(slide).name}'s outputs goes "
            f"({folder}); not replaced: move it, or choose another --out"
        )
    return folder


def check_lock(folder: Path) -> None:
    """Refuse (exit 4) a file at the slide lock's path that is no cellbench lock (a lock
    cellbench takes appears whole, with a pid): taking the lock over would delete it. An empty
    one (a crash of the file system) has nothing to lose."""
    from cellbench.runs.lock import read_lock

    path = Path(folder) / LOCK_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RunConflict(f"{path}: not a lock file cellbench made; not replaced (move it)")
    if path.is_file() and path.stat().st_size and read_lock(path) is None:
        raise RunConflict(f"{path}: not a cellbench lock; not replaced (move it)")


def output_files(folder: Path, stem: str, tiles: bool = True) -> list[Path]:
    """The slide's output files (``tiles``: with the per-tile ones), summary.json last."""
    suffixes = OUTPUT_SUFFIXES + (TILE_SUFFIXES if tiles else ())
    names = [f"{stem}{suffix}" for suffix in suffixes]
    return [Path(folder) / name for name in [*names, "summary.json"]]


def write_output(path: Path, write: Callable[[Any], None]) -> None:
    """One output, atomically, listed in the folder's ledger at once: a kill between two
    outputs leaves each one either absent or listed, so the rerun may replace it."""
    from cellbench import outputs

    atomic_write(path, write)
    outputs.record(path)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, written last (its presence means the slide is finished), and listed."""
    from cellbench import outputs
    from cellbench.atomic import atomic_write_json

    atomic_write_json(path, summary)
    outputs.record(path)


def _journal_is_ours(journal: Path) -> None:
    """Refuse (exit 4) a ``.journal`` that holds anything cellbench's journal never does: it is
    emptied when a slide starts over and removed when it ends."""
    from cellbench.atomic import TEMP_NAME

    if not journal.exists() and not journal.is_symlink():
        return
    if journal.is_symlink() or not journal.is_dir():
        raise RunConflict(f"{journal}: not a folder cellbench made; not replaced (move it)")
    for entry in journal.iterdir():
        ours = entry.name == "plan.json" or PART_RE.fullmatch(entry.name)
        if not (ours or TEMP_NAME.fullmatch(entry.name)) or not entry.is_file():
            raise RunConflict(
                f"{entry}: in the slide's journal folder, not written by cellbench; the journal "
                "is removed when the slide ends: move it"
            )


def check_outputs(folder: Path, stem: str, overwrite: bool) -> None:
    """Before any work: refuse (exit 4, naming it) a file at an output's path that cellbench did
    not write (a user's ``case1.geojson`` beside the predictions is never replaced unless
    ``overwrite``), a ledger that is not cellbench's, and a journal folder holding other files."""
    from cellbench import outputs

    outputs.check_ledger(folder)
    for path in output_files(folder, stem):
        outputs.check(path, overwrite=overwrite, option="--out")
    _journal_is_ours(Path(folder) / ".journal")


def outputs_intact(folder: Path, files: dict[str, str]) -> str | None:
    """Why a finished slide's outputs are not as cellbench left them (a file gone, or a size the
    ledger does not list), or None. Sizes, not hashes: a skip stays instant on large outputs."""
    from cellbench import outputs

    for path in [Path(p) for p in files.values()]:
        if not path.is_file():
            return f"{path.name} is missing"
        if outputs.listed_size(path) != path.stat().st_size:
            return f"{path.name} was changed"
    return None


def _tile_outputs(journal: Path, folder: Path, stem: str, head: dict[str, Any]) -> dict:
    """The per-tile table (Parquet, CSV), the tiles for QuPath (GeoJSON) and the slide's
    tissue summary, streamed from the parts."""
    files = {
        "tiles_parquet": folder / f"{stem}.tiles.parquet",
        "tiles_csv": folder / f"{stem}.tiles.csv",
        "tiles_geojson": folder / f"{stem}.tiles.geojson",
    }
    schema = _tile_schema()
    classes = list(head.get("classes") or [])

    def tables():
        return _part_tile_tables(journal)

    def geojson(fh) -> None:
        fh.write(b'{"type": "FeatureCollection", "features": [\n')
        first = True
        for table in tables():
            for row in table.to_pylist():
                k = classes.index(row["tissue"]) if row["tissue"] in classes else len(classes)
                color = list(TISSUE_COLORS[k % len(TISSUE_COLORS)])
                fh.write((("" if first else ",\n") + _tile_feature(row, color)).encode())
                first = False
        fh.write(b"\n]}\n")

    write_output(files["tiles_parquet"], _parquet_writer(tables, schema))
    write_output(files["tiles_csv"], _csv_writer(tables, schema))
    write_output(files["tiles_geojson"], geojson)
    per_tissue: Counter[str] = Counter()
    confidence: defaultdict[str, float] = defaultdict(float)
    confident: Counter[str] = Counter()  # tiles with a confidence (an undecided tile has none)
    for table in tables():
        columns = table.select(["tissue", "confidence"]).to_pydict()
        for tissue, value in zip(columns["tissue"], columns["confidence"], strict=True):
            per_tissue[tissue] += 1
            if value is not None:
                confidence[tissue] += value
                confident[tissue] += 1
    tiles = sum(per_tissue.values())
    # the most frequent decision; a tie goes to the more confident tissue, then the name
    majority = min(per_tissue, key=lambda t: (-per_tissue[t], -confidence[t], t), default=None)
    summary = {
        **{k: head[k] for k in ("run", "checkpoint", "temperature", "classes") if k in head},
        "tiles": tiles,
        "tiles_per_tissue": dict(sorted(per_tissue.items(), key=lambda kv: (-kv[1], kv[0]))),
        "mean_confidence_per_tissue": {
            t: round(confidence[t] / confident[t], CONFIDENCE_DIGITS) if confident[t] else None
            for t in sorted(per_tissue)
        },
        "majority": majority,
        "majority_share": round(per_tissue[majority] / tiles, 4) if tiles else None,
    }
    return {"files": {k: str(v) for k, v in files.items()}, "organ": summary}


def assemble(
    journal: Path,
    folder: Path,
    stem: str,
    thumbnail: np.ndarray,
    to_thumbnail: tuple[float, float, float],
    tile_head: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream the journal's parts into the outputs; returns counts and the files written.

    ``to_thumbnail`` = (x0, y0, level-0 pixels per thumbnail pixel) places objects on the
    thumbnail for the overlay. ``tile_head`` (its ``describe()``): the journal holds per-tile
    decisions: the per-tile table and the ``organ`` summary too."""
    from PIL import Image, ImageDraw

    files = {
        "geojson": folder / f"{stem}.geojson",
        "parquet": folder / f"{stem}.parquet",
        "csv": folder / f"{stem}.csv",
        "overlay": folder / f"{stem}.overlay.png",
    }
    counts: Counter[str] = Counter()
    by_region: defaultdict[int, Counter[str]] = defaultdict(Counter)
    edge = 0
    table_schema = _schema(False, tile_head is not None)

    def geojson(fh) -> None:
        fh.write(b'{"type": "FeatureCollection", "features": [\n')
        first = True
        for table in _part_tables(journal):
            for row in table.to_pylist():
                fh.write((("" if first else ",\n") + _feature(row)).encode())
                first = False
        fh.write(b"\n]}\n")

    write_output(files["geojson"], geojson)
    write_output(files["parquet"], _parquet_writer(lambda: _part_tables(journal), table_schema))
    write_output(files["csv"], _csv_writer(lambda: _part_tables(journal), table_schema))
    extra = {}
    if tile_head is not None:
        extra = _tile_outputs(journal, folder, stem, tile_head)
    else:  # a slide redone without a per-tile head: no table of an earlier run stays behind
        from cellbench import outputs

        for suffix in TILE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if outputs.written_by_cellbench(path):  # never a file cellbench did not write
                path.unlink()

    # counts and overlay: one more pass, columns only
    image = Image.fromarray(thumbnail)
    draw = ImageDraw.Draw(image)
    x0, y0, per_px = to_thumbnail
    for table in _part_tables(journal):
        cols = table.select(["x_px", "y_px", "area_px", "type", "color", "region", "touches_edge"])
        cols = cols.to_pydict()
        for x, y, area, kind, color, region, touches in zip(*cols.values(), strict=True):
            counts[kind] += 1
            by_region[int(region)][kind] += 1
            edge += bool(touches)
            cx, cy = (x - x0) / per_px, (y - y0) / per_px
            r = max(0.5, math.sqrt(area / math.pi) / per_px)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(color))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_output(files["overlay"], lambda fh: fh.write(buffer.getvalue()))
    return {
        "files": {k: str(v) for k, v in files.items()} | extra.get("files", {}),
        **({"organ": extra["organ"]} if extra else {}),
        "counts": dict(sorted(counts.items())),
        "counts_by_region": {
            str(region): dict(sorted(c.items())) for region, c in sorted(by_region.items())
        },
        "objects": sum(counts.values()),
        "touching_tile_edge": edge,
    }
