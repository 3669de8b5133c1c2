"""Perturbed copies of instance maps: each kind of damage does what it says."""

from __future__ import annotations

import numpy as np

from cellbench.data.perturb import Perturbation, perturb_tile, perturb_tiles

NONE = Perturbation(0, 0, 0, 0, 0, 0)


def two_nuclei():
    inst = np.zeros((20, 30), np.int32)
    inst[2:12, 2:12], inst[2:12, 12:22] = 1, 2  # touching
    return inst, np.where(inst > 0, 1, 0).astype(np.uint8)


def only(**kind) -> Perturbation:
    return Perturbation(**{**NONE.__dict__, **kind})


def test_each_kind_of_damage():
    inst, types = two_nuclei()
    rng = np.random.default_rng(0)
    assert (perturb_tile(inst, types, rng, NONE)[0] == inst).all()
    eroded, _ = perturb_tile(inst, types, rng, only(erode=1))
    assert (eroded > 0).sum() < (inst > 0).sum()
    grown, grown_types = perturb_tile(inst, types, rng, only(dilate=1))
    assert (grown > 0).sum() > (inst > 0).sum() and ((grown > 0) == (grown_types > 0)).all()
    assert perturb_tile(inst, types, rng, only(drop=1))[0].max() == 0
    split, _ = perturb_tile(inst, types, rng, only(split=1))
    assert len(np.unique(split[split > 0])) == 4 and ((split > 0) == (inst > 0)).all()
    merged, _ = perturb_tile(inst, types, rng, only(merge=1))
    assert len(np.unique(merged[merged > 0])) == 1
    _, retyped = perturb_tile(inst, types, rng, only(retype=1))
    assert set(np.unique(retyped[inst > 0])) - {1} and (retyped[inst == 0] == 0).all()


def test_perturb_tiles_is_seeded_and_leaves_the_input_alone():
    inst, types = two_nuclei()
    stack, stack_types = np.stack([inst, inst]), np.stack([types, types])
    a = perturb_tiles(stack, stack_types, seed=1)
    b = perturb_tiles(stack, stack_types, seed=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert (stack[0] == inst).all()
