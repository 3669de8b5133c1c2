"""Safe, memory-bounded access to ``.npy`` files.

``np.load(mmap_mode="r")`` of a truncated file fails with an obscure mmap error, and pages read
through a memory map count towards the process RSS until the kernel reclaims them. These helpers
check the header against the file size first (one clear message naming the file), and drop the
pages of a chunk once it is processed so that converting an 8 GB fold stays within a bounded RSS.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from pathlib import Path

import numpy as np

from cellbench.errors import BadInputError


def read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, or BadInputError."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                shape, fortran, dtype = np.lib.format._read_array_header(fh, version)  # noqa: SLF001
            return tuple(shape), dtype, fortran, fh.tell()
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: file not found") from exc
    except (ValueError, OSError) as exc:
        raise BadInputError(f"{path}: not a readable .npy file ({exc})") from exc


def open_npy(path: Path) -> np.ndarray:
    """Memory-map a .npy file read-only after checking it is complete.

    Object arrays (pickles) are refused: a dataset file must never run code when read.
    """
    path = Path(path)
    shape, dtype, _, offset = read_header(path)
    if dtype.hasobject:
        raise BadInputError(
            f"{path}: object (pickled) array; re-save it with a plain dtype "
            "(e.g. np.asarray(a, str))"
        )
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise BadInputError(
            f"{path}: truncated .npy file: header {shape} {dtype} needs {expected} bytes, "
            f"file has {size}"
        )
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.load(path, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


class _RowFile:
    """An open C-order .npy file whose rows are read or written in place with positional I/O
    (``os.preadv``/``os.pwrite``): the header parsed once, no shared file position (safe from
    several threads), nothing memory-mapped (nothing counted in our RSS)."""

    def __init__(self, path: Path, flags: int):
        self.path = Path(path)
        shape, self.dtype, fortran, self._offset = read_header(self.path)
        if fortran:
            raise BadInputError(f"{path}: Fortran-order array; re-save it in C order")
        self.shape = tuple(int(d) for d in shape)
        self.rows, self.row_shape = self.shape[0], self.shape[1:]
        self._row = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, flags)

    def _bytes(self, start: int, rows: np.ndarray) -> tuple[memoryview, int]:
        """``rows`` (this file's dtype and row shape) as bytes, and where row ``start`` lies."""
        if rows.dtype != self.dtype or tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.path}: rows {rows.shape} {rows.dtype}, file {self.shape}")
        if not 0 <= start <= self.rows - len(rows):
            raise ValueError(f"{self.path}: rows {start}..{start + len(rows)} of {self.rows}")
        return memoryview(rows.reshape(-1).view(np.uint8)), self._offset + start * self._row

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()


class NpyRowReader(_RowFile):
    """Rows of a .npy file read into the caller's buffers: reusing a few buffers batch after
    batch spares the page faults of a fresh array each time, and one plain read per batch costs
    less than touching a memory map page by page."""

    def __init__(self, path: Path):
        super().__init__(path, os.O_RDONLY)

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start`` .. ``start + len(out)`` into ``out`` (C-contiguous)."""
        view, at = self._bytes(start, out)
        while view:
            got = os.preadv(self._fd, [view], at)
            if not got:
                raise BadInputError(f"{self.path}: truncated .npy file (rows from {start})")
            view, at = view[got:], at + got
        return out


def release_rows(array: np.ndarray, start: int, stop: int) -> None:
    """Drop from our RSS the pages holding rows [start, stop) of a memory-mapped array.

    Pages of a file mapping count in RSS until dropped; MADV_DONTNEED drops them from this process
    (clean pages stay in the page cache; dirty pages of a shared mapping stay in the page cache and
    are written back, so nothing is lost). ``flush()`` a written map first.
    """
    if not isinstance(array, np.memmap) or array.ndim == 0:
        return
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    row = array.strides[0]
    map_start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    begin = array.offset - map_start + start * row
    end = array.offset - map_start + stop * row
    page = mmap.PAGESIZE
    begin -= begin % page
    end = min(len(mm), end)
    if end <= begin:
        return
    with contextlib.suppress(OSError, ValueError):  # advisory only
        mm.madvise(mmap.MADV_DONTNEED, begin, end - begin)


class NpyWriter:
    """Write a .npy file row block by row block, sequentially, without holding it in memory.

    Plain ``write`` calls rather than a writable memory map: nothing counts towards our RSS (the
    page cache holds the data, not this process) and there are no page faults, which made a
    memory-mapped writer about twice as slow. Closing checks that every row was written.

        with NpyWriter(path, np.float64, (n, h, w, 3)) as out:
            out.write(tile[None])
    """

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.rows = 0
        self._fh = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._fh, header)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {rows.shape} do not fit {self.shape}")
        rows.tofile(self._fh)
        self.rows += len(rows)

    def close(self) -> None:
        self._fh.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written, expected {self.shape[0]}")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()  # an error is already propagating; the caller discards the file


class NpyRows(_RowFile):
    """A .npy file of a fixed shape whose rows are written in place: created at full size (a
    sparse file: its header, then zeros) or reopened to go on writing it, refused when it holds
    another shape or dtype. ``sync()`` puts every row written so far on disk: call it before a
    manifest counts them.

    ``write_behind``: each write also starts the disk write of its rows, without waiting
    (``posix_fadvise(DONTNEED)``, which on Linux starts the writeback of a range's dirty pages;
    pages still dirty or being written stay cached). Otherwise the kernel writes them at its own
    pace and each ``sync()`` waits for all of them at once. Measured writing vit-demo's 48 MB
    of features at its speed: the last sync took 25-36 ms without, 0.3-0.6 ms with (the advice
    cost 15 ms of the writer thread's time over the 1.2 s; the kernel's flusher would spend it
    anyway)."""

    def __init__(
        self, path: Path, dtype, shape: tuple[int, ...], create: bool, write_behind: bool = False
    ):
        self.write_behind = write_behind and hasattr(os, "posix_fadvise")
        dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
        if create:
            with open(path, "wb") as fh:
                header = {
                    "descr": np.lib.format.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(fh, header)
                fh.truncate(fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        super().__init__(path, os.O_WRONLY)
        if self.shape != shape or self.dtype != dtype:
            self.close()
            raise BadInputError(
                f"{path}: holds {self.shape} {self.dtype}, expected {shape} {dtype}"
            )

    def write(self, start: int, rows: np.ndarray) -> None:
        data, at = self._bytes(start, np.ascontiguousarray(rows, dtype=self.dtype))
        begin, size = at, len(data)
        while data:
            done = os.pwrite(self._fd, data, at)
            data, at = data[done:], at + done
        if self.write_behind and size:
            with contextlib.suppress(OSError):  # advice only: sync() still waits for every row
                os.posix_fadvise(self._fd, begin, size, os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        os.fsync(self._fd)


def sha256_file(path: Path, chunk: int = 16 << 20) -> str:
    """Streaming sha256 (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()
