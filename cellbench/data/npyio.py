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


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a C-order .npy file, read with one ``readinto`` into a new array.

    Faster than touching a memory map page by page (one copy in the kernel instead of a page
    fault per 4 KB), and nothing stays mapped in our RSS afterwards.
    """
    shape, dtype, fortran, offset = read_header(Path(path))
    if fortran:
        raise BadInputError(f"{path}: Fortran-order array; re-save it in C order")
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    stop = min(stop, shape[0])
    out = np.empty((max(stop - start, 0), *shape[1:]), dtype=dtype)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset + start * row)
        view = memoryview(out.reshape(-1).view(np.uint8))
        got = 0
        while got < len(view):
            n = fh.readinto(view[got:])
            if not n:
                raise BadInputError(f"{path}: truncated .npy file (rows {start}..{stop})")
            got += n
    return out


class NpyRowReader:
    """Rows of a C-order .npy file read into the caller's buffers with positional reads
    (``os.preadv``): the header parsed once, the file kept open, no shared file position (safe
    from several threads). Reusing a few buffers batch after batch spares the page faults that
    ``read_rows``' fresh array costs each time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        shape, self.dtype, fortran, self._offset = read_header(self.path)
        if fortran:
            raise BadInputError(f"{path}: Fortran-order array; re-save it in C order")
        self.rows, self.row_shape = shape[0], tuple(shape[1:])
        self._row = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start`` .. ``start + len(out)`` into ``out`` (C-contiguous, this file's dtype)."""
        if out.dtype != self.dtype or tuple(out.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.path}: buffer {out.shape} {out.dtype}, rows {self.row_shape}")
        view = memoryview(out.reshape(-1).view(np.uint8))
        at = self._offset + start * self._row
        while view:
            got = os.preadv(self._fd, [view], at)
            if not got:
                raise BadInputError(f"{self.path}: truncated .npy file (rows from {start})")
            view, at = view[got:], at + got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> NpyRowReader:
        return self

    def __exit__(self, *_) -> None:
        self.close()


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


class NpyRows:
    """A .npy file of a fixed shape whose rows are written in place with ``os.pwrite``: created
    at full size (a sparse file: its header, then zeros) or reopened to go on writing it.

    Nothing is mapped, so nothing written counts towards our RSS (the page cache holds it, not
    this process), and ``sync()`` puts every row written so far on disk: call it before a
    manifest counts them.
    """

    def __init__(self, path: Path, dtype, shape: tuple[int, ...], create: bool):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if create:
            with open(self.path, "wb") as fh:
                header = {
                    "descr": np.lib.format.dtype_to_descr(self.dtype),
                    "fortran_order": False,
                    "shape": self.shape,
                }
                np.lib.format.write_array_header_1_0(fh, header)
                self._offset = fh.tell()
                fh.truncate(self._offset + self.shape[0] * self._row)
        else:
            got, got_dtype, fortran, self._offset = read_header(self.path)
            if got != self.shape or got_dtype != self.dtype or fortran:
                raise BadInputError(
                    f"{self.path}: holds {got} {got_dtype}, expected {self.shape} {self.dtype}"
                )
        self._fd = os.open(self.path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"{self.path}: rows {rows.shape} at {start} do not fit {self.shape}")
        data = memoryview(rows.reshape(-1).view(np.uint8))
        at = self._offset + start * self._row
        while data:
            done = os.pwrite(self._fd, data, at)
            data, at = data[done:], at + done

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> NpyRows:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def sha256_file(path: Path, chunk: int = 16 << 20) -> str:
    """Streaming sha256 (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()
