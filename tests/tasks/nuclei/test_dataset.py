"""The torch dataset over the store: targets, families, augmentation, DataLoader."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader

from cellbench.data.augment import NucleiAugment
from cellbench.data.families import TISSUES, family_of
from cellbench.data.targets import hv_map
from cellbench.tasks.nuclei.dataset import NucleiDataset


def test_items_have_the_documented_shapes_and_dtypes(store_master):
    ds = NucleiDataset(store_master, [1, 2])
    assert len(ds) == 12
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["hv"].shape == (2, 64, 64) and item["hv"].abs().max() <= 1
    assert item["np"].dtype == torch.int64 and set(item["np"].unique().tolist()) <= {0, 1}
    assert item["types"].max() <= 5
    assert torch.equal(item["np"], (item["inst"] > 0).long())
    assert TISSUES[int(item["tissue"])] == ds.tissues[0]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["hv"].shape == (4, 2, 64, 64)


def test_family_selection(store_master):
    full = NucleiDataset(store_master, [1, 2, 3])
    for family in ("glandular", "digestive", "urologic"):
        ds = NucleiDataset(store_master, [1, 2, 3], family=family)
        assert all(family_of(t) == family for t in ds.tissues)
        assert len(ds) == sum(family_of(t) == family for t in full.tissues)


def test_items_are_writable_copies_without_warnings(store_master):
    ds = NucleiDataset(store_master, [1])
    sample = ds.sample(0)
    for name in ("image", "inst", "types", "hv"):
        array = getattr(sample, name)
        assert array.flags.writeable and not isinstance(array, np.memmap), name
    with warnings.catch_warnings():
        # torch warns (once per process) on tensors over read-only arrays.
        warnings.simplefilter("error")
        item = ds[0]
    item["hv"].zero_()  # over a read-only mapping this would crash
    assert ds[0]["hv"].abs().max() > 0  # and the store is not written through


def _differs_from_stored(ds: NucleiDataset, i: int, item) -> bool:
    return not np.array_equal(item["inst"].numpy(), ds.sample(i).inst)


def test_augmented_items_stay_consistent(store_master):
    torch.manual_seed(0)
    ds = NucleiDataset(store_master, [3], augment=NucleiAugment(0.5, 0.5, True))
    changed = 0
    for i in range(len(ds)):
        item = ds[i]
        inst = item["inst"].numpy().astype(np.int32)
        np.testing.assert_allclose(item["hv"].numpy(), hv_map(inst), atol=1e-5)
        assert torch.equal(item["types"] > 0, item["inst"] > 0)
        changed += _differs_from_stored(ds, i, item)
    assert changed > 0  # augmentation did something


def test_augmentation_follows_torch_seed(store_master):
    ds = NucleiDataset(store_master, [1], augment=True)
    torch.manual_seed(5)
    first = [ds[i] for i in range(len(ds))]
    torch.manual_seed(5)
    again = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a["hv"], b["hv"]) for a, b in zip(first, again, strict=True))
    assert any(_differs_from_stored(ds, i, item) for i, item in enumerate(first))
