"""The CellViT-shaped nuclei decoder: output shapes on patch-16 and patch-14 grids, learning."""

from __future__ import annotations

import pytest
import torch

from cellbench.tasks.nuclei.decoder import NucleiDecoder

SMALL = {"widths": (4, 4, 4, 4), "stem": (4, 4)}


@pytest.mark.parametrize(("grid", "patch"), [(16, 16), (18, 14)])
def test_outputs_are_at_the_tile_size_for_patch_16_and_patch_14_grids(grid, patch):
    torch.manual_seed(0)
    model = NucleiDecoder(embed_dim=12, **SMALL)
    tokens = torch.randn(2, 4, grid, grid, 12).half()  # float16 as the feature store holds it
    out = model(tokens, torch.randn(2, 3, 256, 256))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "np": (2, 2, 256, 256),
        "hv": (2, 2, 256, 256),
        "nt": (2, 6, 256, 256),
    }
    assert all(v.dtype == torch.float32 for v in out.values())


def test_wrong_token_shapes_and_settings_are_refused():
    model = NucleiDecoder(embed_dim=12, **SMALL)
    with pytest.raises(ValueError, match=r"expected \(B, 4, G, G, 12\)"):
        model(torch.randn(1, 3, 4, 4, 12), torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="one per token block"):
        NucleiDecoder(embed_dim=12, num_blocks=2, **SMALL)
    with pytest.raises(ValueError, match="hv_activation"):
        NucleiDecoder(embed_dim=12, hv_activation="relu", **SMALL)


def test_tanh_bounds_hv():
    torch.manual_seed(0)
    model = NucleiDecoder(embed_dim=4, hv_activation="tanh", **SMALL)
    with torch.no_grad():
        hv = model(torch.randn(1, 4, 4, 4, 4) * 50, torch.randn(1, 3, 64, 64) * 50)["hv"]
    assert hv.abs().max() <= 1


def test_dropout_is_configurable():
    model = NucleiDecoder(embed_dim=4, dropout=0.3, **SMALL)
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3}


def test_cellvits_three_block_first_stage_is_an_option_and_the_default_keeps_old_weights():
    two = NucleiDecoder(embed_dim=8, num_blocks=4, widths=(16, 8, 8, 4), stem=(4, 4))
    three = NucleiDecoder(
        embed_dim=8, num_blocks=4, widths=(16, 8, 8, 4), stem=(4, 4), first_stage_blocks=3
    )
    # one more conv block in every branch's first stage, nowhere else
    changed = set(three.state_dict()) ^ set(two.state_dict())
    assert changed and all(".stages.0." in key for key in changed)
    block = sum(p.numel() for p in three.branches["np"].stages[0][2].parameters())
    count = sum(p.numel() for p in three.parameters()) - sum(p.numel() for p in two.parameters())
    assert count == block * len(three.branches)
    tokens, image = torch.randn(1, 4, 4, 4, 8), torch.randn(1, 3, 64, 64)
    out = three(tokens, image)
    assert out["np"].shape == (1, 2, 64, 64) and out["nt"].shape[1] == 6
