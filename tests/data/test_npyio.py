"""Safe .npy access: truncated and pickled files are refused by name; pages can be released."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.data.npyio import open_npy, release_rows, sha256_file
from cellbench.errors import BadInputError


def test_truncated_and_object_arrays_are_refused(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((10, 100)))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(BadInputError, match=r"a.npy: truncated .npy file"):
        open_npy(path)
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="object"):
        open_npy(path)
    path.write_text("not numpy")
    with pytest.raises(BadInputError, match="not a readable .npy"):
        open_npy(path)


def test_release_rows_keeps_data_readable(tmp_path):
    path = tmp_path / "b.npy"
    out = np.lib.format.open_memmap(path, "w+", np.float32, (64, 1024))
    out[:] = np.arange(64, dtype=np.float32)[:, None]
    out.flush()
    release_rows(out, 0, 32)
    del out
    arr = open_npy(path)
    release_rows(arr, 0, 64)
    assert arr[40, 3] == 40 and len(sha256_file(path)) == 64


def test_rows_written_in_place_read_back_and_a_reopen_checks_the_shape(tmp_path):
    from cellbench.data.npyio import NpyRowReader, NpyRows

    path = tmp_path / "rows.npy"
    data = np.arange(5 * 3 * 2, dtype=np.float16).reshape(5, 3, 2)
    with NpyRows(path, np.float16, (5, 3, 2), create=True) as out:
        out.write(3, data[3:])  # any order: positional writes
        out.write(0, data[:3])
        out.sync()
    np.testing.assert_array_equal(np.load(path), data)  # a plain .npy file
    with NpyRows(path, np.float16, (5, 3, 2), create=False) as again:
        again.write(1, data[1:2] * 0)
    assert np.load(path)[1].sum() == 0
    with pytest.raises(BadInputError, match="expected"):
        NpyRows(path, np.float16, (6, 3, 2), create=False)
    with NpyRowReader(path) as reader:
        buffer = np.empty((2, 3, 2), np.float16)
        np.testing.assert_array_equal(reader.read_into(3, buffer), data[3:])
        with pytest.raises(ValueError, match="rows 4..6 of 5"):
            reader.read_into(4, buffer)
    path.write_bytes(path.read_bytes()[:-8])  # truncated under us
    with NpyRowReader(path) as reader, pytest.raises(BadInputError, match="truncated"):
        reader.read_into(3, buffer)


def test_write_behind_starts_the_disk_write_of_each_range_written(tmp_path, monkeypatch):
    """Each write advises the kernel to write its bytes now (posix_fadvise DONTNEED on exactly
    that range), the rows read back whole; without write_behind there is no advice."""
    import os

    from cellbench.data.npyio import NpyRows

    advised = []
    real = os.posix_fadvise

    def recording(fd, offset, length, advice):
        advised.append((offset, length, advice))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    path = tmp_path / "rows.npy"
    data = np.arange(6 * 4, dtype=np.float16).reshape(6, 4)
    with NpyRows(path, np.float16, (6, 4), create=True, write_behind=True) as out:
        header = out._offset
        out.write(2, data[2:5])
        out.write(0, data[:2])
        out.write(5, data[5:])
        out.sync()
    np.testing.assert_array_equal(np.load(path), data)
    row = 4 * 2  # bytes of a row
    dontneed = os.POSIX_FADV_DONTNEED
    assert advised == [
        (header + 2 * row, 3 * row, dontneed),
        (header, 2 * row, dontneed),
        (header + 5 * row, row, dontneed),
    ]
    advised.clear()
    with NpyRows(path, np.float16, (6, 4), create=False) as again:
        again.write(0, data[:1])
    assert advised == []
