"""Deterministic, stratified index splits and subsets.

Each class is shuffled with its own generator seeded by ``(seed, crc32(class name))`` (or the
class index when no names are given), so a class's split does not move when another class is
added, removed or selected away, and the same seed always gives the same split on any machine
(numpy's PCG64 is platform-independent).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def _class_rng(seed: int, label: int, classes: Sequence[str] | None) -> np.random.Generator:
    key = zlib.crc32(classes[label].encode()) if classes is not None else int(label)
    return np.random.default_rng([int(seed), key])


def split_counts(n: int, val_ratio: float, test_ratio: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for a class of ``n`` images.

    A class with >= 2 images keeps at least one val image (when val_ratio > 0) and one train
    image; a class with >= 3 images also gets a test image when test_ratio > 0.
    """
    n_val = round(n * val_ratio) if val_ratio > 0 else 0
    n_test = round(n * test_ratio) if test_ratio > 0 else 0
    if val_ratio > 0 and n >= 2:
        n_val = max(n_val, 1)
    if test_ratio > 0 and n >= 3:
        n_test = max(n_test, 1)
    # train keeps at least one image; shrink test first, then val
    while n_val + n_test > max(n - 1, 0):
        if n_test > (1 if test_ratio > 0 and n >= 3 else 0):
            n_test -= 1
        elif n_val > (1 if val_ratio > 0 and n >= 2 else 0):
            n_val -= 1
        elif n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def stratified_split(
    labels: np.ndarray,
    val_ratio: float,
    test_ratio: float,
    seed: int,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test), split class by class; each array sorted."""
    labels = np.asarray(labels)
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(labels):
        idx = _class_rng(seed, label, classes).permutation(np.flatnonzero(labels == label))
        n_train, n_val, _ = split_counts(len(idx), val_ratio, test_ratio)
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(  # type: ignore[return-value]
        np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts
    )


def stratified_subset(
    labels: np.ndarray, n: int, seed: int, classes: Sequence[str] | None = None
) -> np.ndarray:
    """Sorted indices of ``n`` samples keeping class proportions (largest-remainder rounding).

    Every class keeps at least one sample when ``n`` allows it.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    present, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    if n >= len(present):
        take = np.maximum(take, 1)
    # hand out what is left to the largest fractional parts, then trim any excess from the largest
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < n:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    chosen = [
        _class_rng(seed, label, classes).permutation(np.flatnonzero(labels == label))[:k]
        for label, k in zip(present, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))
