import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cellbench.data.classify.splits import split_counts, stratified_split, stratified_subset


@given(n=st.integers(1, 500), val=st.floats(0, 0.5), test=st.floats(0, 0.45))
def test_split_counts_add_up_and_keep_train_and_val(n, val, test):
    n_train, n_val, n_test = split_counts(n, val, test)
    assert n_train + n_val + n_test == n
    assert n_train >= 1 and n_val >= 0 and n_test >= 0
    if n >= 2 and val > 0:
        assert n_val >= 1


def test_stratified_split_is_a_seeded_partition_per_class():
    labels = np.repeat(np.arange(4), [10, 7, 2, 30])
    a = stratified_split(labels, 0.2, 0.1, seed=3)
    b = stratified_split(labels, 0.2, 0.1, seed=3)
    c = stratified_split(labels, 0.2, 0.1, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    merged = np.concatenate(a)
    assert sorted(merged.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert set(labels[a[1]]) == {0, 1, 2, 3}  # every class, even the 2-image one, has val


def test_class_split_does_not_move_when_another_class_is_added():
    names = ["a", "b"]
    labels = np.repeat([0, 1], 20)
    _, val_ab, _ = stratified_split(labels, 0.25, 0.0, seed=0, classes=names)
    more = np.repeat([0, 1, 2], 20)  # class "0" before "a" in sorted order shifts the indices
    _, val_more, _ = stratified_split(more, 0.25, 0.0, seed=0, classes=["0", "a", "b"])
    # the images of "a" are rows 20..39 in the second array
    assert (val_more[(val_more >= 20) & (val_more < 40)] - 20).tolist() == val_ab[
        val_ab < 20
    ].tolist()


def test_stratified_subset_keeps_proportions_and_every_class():
    labels = np.repeat(np.arange(3), [80, 15, 5])
    idx = stratified_subset(labels, 20, seed=0)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [16, 3, 1]
