"""Tissues, families and the PanNuke fold protocol."""

from __future__ import annotations

import pytest

from cellbench.data.families import (
    DEFAULT_FAMILIES,
    TISSUES,
    family_of,
    folds_for_split,
    resolve_families,
    tiles_for_family,
)
from cellbench.errors import UsageError


def test_every_tissue_has_exactly_one_default_family():
    assert len(TISSUES) == 19
    members = [t for tissues in DEFAULT_FAMILIES.values() for t in tissues]
    assert sorted(members) == sorted(TISSUES)
    assert family_of("Colon") == "digestive" and family_of("HeadNeck") == "epidermal"


@pytest.mark.parametrize(
    "split, folds", [(1, ((1,), (2,), (3,))), (2, ((2,), (1,), (3,))), (3, ((3,), (2,), (1,)))]
)
def test_pannuke_protocol(split, folds):
    s = folds_for_split(split)
    assert (s.train, s.val, s.test) == folds
    assert s.for_stage("test") == folds[2]


def test_bad_split_and_unknown_names_are_usage_errors():
    with pytest.raises(UsageError, match="1, 2 or 3"):
        folds_for_split(4)
    with pytest.raises(UsageError, match="unknown tissue 'Brain'"):
        family_of("Brain")
    with pytest.raises(UsageError, match="unknown family 'gut'"):
        tiles_for_family(["Colon"], "gut")


def test_tiles_for_family_and_overrides():
    tissues = ["Colon", "Breast", "Lung", "Colon"]
    assert tiles_for_family(tissues, "digestive") == [0, 3]
    assert tiles_for_family(tissues, None) == [0, 1, 2, 3]
    custom = {"gut": ["Colon", "Stomach"], "chest": ["Lung", "Breast"]}
    assert tiles_for_family(tissues, "chest", custom) == [1, 2]
    assert family_of("Liver", custom) is None
    with pytest.raises(UsageError, match="in both"):
        resolve_families({"a": ["Colon"], "b": ["Colon"]})
    with pytest.raises(UsageError, match="unknown tissue"):
        resolve_families({"a": ["Brain"]})
