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
