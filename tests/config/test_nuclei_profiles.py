"""Shipped nuclei profiles: cellvit-optimus carries seeds/001's recipe and per-family ranges,
nuclei-demo the CPU recipe; both build their decoder."""

from __future__ import annotations

import pytest

from cellbench.config import list_profiles, load_config
from cellbench.data.families import DEFAULT_FAMILIES

# seeds/001 phase 5: NP Dice, HV MSE, NT accuracy per family; tolerances 2 %, 20 %, 3 %
SEEDS = {
    "glandular": (0.96, 0.01, 0.91),
    "digestive": (0.96, 0.02, 0.88),
    "urologic": (0.93, 0.28, 0.91),
    "epidermal": (0.95, 0.27, 0.89),
    "respiratory": (0.94, 0.05, 0.92),
}


def test_cellvit_optimus_is_the_seed_recipe_with_every_family_range():
    assert {"cellvit-optimus", "nuclei-demo"} <= set(list_profiles())
    c = load_config(profile="cellvit-optimus")
    assert c.task == "nuclei" and c.data.augment
    assert (c.train.epochs, c.model.drop_rate) == (50, 0.1)
    # a sweep or --set task=nuclei (no --family) still names the decoder in run_start/runs list
    assert c.model.name == load_config(profile="nuclei-demo").model.name == "nuclei_decoder"
    assert c.nuclei.widths == [512, 256, 128, 64] and c.nuclei.stem == [32, 64]
    assert set(SEEDS) == set(DEFAULT_FAMILIES)
    for family, (dice, hv, nt) in SEEDS.items():
        assert c.expect[f"{family}.np_dice"] == pytest.approx([dice * 0.98, 1.0], abs=1e-4)
        assert c.expect[f"{family}.hv_mse"] == pytest.approx([0.0, hv * 1.2], abs=1e-4)
        assert c.expect[f"{family}.nt_accuracy"] == pytest.approx([nt * 0.97, 1.0], abs=1e-4)


def test_a_family_run_sees_only_its_ranges():
    from cellbench.tasks import get_task

    c = load_config(profile="cellvit-optimus", overrides=["data.family=urologic"])
    ranges = get_task("nuclei").expect_ranges(c)
    assert ranges == {
        "np_dice": c.expect["urologic.np_dice"],
        "hv_mse": c.expect["urologic.hv_mse"],
        "nt_accuracy": c.expect["urologic.nt_accuracy"],
    }


def test_nuclei_demo_builds_a_small_decoder_for_vit_demo_tokens():
    from cellbench.models.backbones import load_backbone_profile
    from cellbench.tasks.nuclei.decoder import NucleiDecoder

    c = load_config(profile="nuclei-demo")
    vit = load_backbone_profile("vit-demo")
    assert len(c.nuclei.widths) == len(vit.blocks)  # one decoder stage per stored block
    decoder = NucleiDecoder(
        vit.kwargs["embed_dim"], len(vit.blocks), c.nuclei.widths, c.nuclei.stem
    )
    assert sum(p.numel() for p in decoder.parameters()) < 500_000  # CPU-sized
    assert not c.expect  # generated data is not real PanNuke: no seeds/001 ranges
