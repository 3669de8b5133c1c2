"""The nuclei loss terms: MSGE against a per-pixel reference, weights, and learning with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellbench.data.targets import hv_map
from cellbench.tasks.nuclei.decoder import NucleiDecoder
from cellbench.tasks.nuclei.losses import NucleiLoss, msge, sobel_kernels


def _tile(size=32):
    inst = np.zeros((size, size), np.int32)
    inst[4:12, 5:14] = 1
    inst[18:28, 16:25] = 2
    yy, xx = np.mgrid[:size, :size]
    inst[(yy - 8) ** 2 + (xx - 24) ** 2 < 16] = 3
    return inst


def _targets(inst):
    hv = torch.from_numpy(hv_map(inst)).unsqueeze(0).float()
    nuclei = torch.from_numpy((inst > 0).astype(np.int64)).unsqueeze(0)
    types = torch.from_numpy(np.where(inst > 0, inst % 5 + 1, 0).astype(np.int64)).unsqueeze(0)
    return {"np": nuclei, "hv": hv, "types": types}


def msge_reference(pred: np.ndarray, true: np.ndarray, nuclei: np.ndarray) -> float:
    """The definition, pixel by pixel: 5x5 weighted sums with zero padding, mean in nuclei."""
    kx, ky = (k.numpy() for k in sobel_kernels())
    h, w = nuclei.shape

    def grad(hv, channel, kernel, y, x):
        total = 0.0
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    total += kernel[dy + 2, dx + 2] * hv[channel, yy, xx]
        return total

    sq, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            if not nuclei[y, x]:
                continue
            for channel, kernel in ((0, kx), (1, ky)):
                d = grad(pred, channel, kernel, y, x) - grad(true, channel, kernel, y, x)
                sq += d * d
                count += 1
    return sq / count


def test_sobel_kernels_take_x_along_the_width():
    kx, ky = sobel_kernels()
    ramp = torch.arange(9.0).repeat(9, 1)  # grows along x (columns)
    hv = torch.stack([ramp, ramp]).unsqueeze(0)
    from cellbench.tasks.nuclei.losses import hv_gradients

    g = hv_gradients(hv)[0, :, 4, 4]
    assert g[0] > 0 and g[1] == pytest.approx(0.0, abs=1e-5)
    assert torch.equal(kx, ky.T)


def test_msge_is_zero_for_identical_maps_and_matches_the_per_pixel_reference():
    inst = _tile(24)
    t = _targets(inst)
    assert float(msge(t["hv"], t["hv"], t["np"])) == 0.0
    pred = t["hv"] + 0.3 * torch.randn(t["hv"].shape, generator=torch.Generator().manual_seed(0))
    expected = msge_reference(pred[0].numpy(), t["hv"][0].numpy(), t["np"][0].numpy())
    assert float(msge(pred, t["hv"], t["np"])) == pytest.approx(expected, rel=1e-5)


def test_terms_are_named_weighted_and_zero_weights_are_skipped():
    t = _targets(_tile())
    g = torch.Generator().manual_seed(1)
    outputs = {
        "np": torch.randn(1, 2, 32, 32, generator=g),
        "hv": torch.randn(1, 2, 32, 32, generator=g),
        "nt": torch.randn(1, 6, 32, 32, generator=g),
    }
    weights = {"np_ce": 1, "np_dice": 0.5, "hv_mse": 2, "hv_msge": 1, "nt_ce": 1, "nt_dice": 0}
    terms = NucleiLoss(weights)(outputs, t)
    assert set(terms) == {"loss", "np_ce", "np_dice", "hv_mse", "hv_msge", "nt_ce"}
    expected = sum(w * terms[k] for k, w in weights.items() if w)
    assert float(terms["loss"]) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="not a loss term"):
        NucleiLoss({"hv_mae": 1})


def test_the_decoder_overfits_one_small_batch():
    torch.manual_seed(0)
    inst = _tile(32)
    t = _targets(inst)
    tokens = torch.randn(1, 4, 2, 2, 8)  # patch 16 over a 32-px tile
    image = torch.randn(1, 3, 32, 32) + t["np"].unsqueeze(1).float()  # nuclei are visible
    model = NucleiDecoder(embed_dim=8, widths=(8, 8, 8, 8), stem=(8, 8))
    criterion = NucleiLoss({"np_ce": 1, "np_dice": 1, "hv_mse": 1, "hv_msge": 1, "nt_ce": 1})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        optimizer.zero_grad()
        terms = criterion(model(tokens, image), t)
        terms["loss"].backward()
        optimizer.step()
        if first is None:
            first = {k: float(v.detach()) for k, v in terms.items()}
    last = {k: float(v.detach()) for k, v in terms.items()}
    assert last["loss"] < 0.1 * first["loss"]
    assert last["np_dice"] < 0.05 and last["hv_mse"] < 0.05


def test_hovernet_np_dice_is_the_sum_of_the_nucleus_and_background_terms():
    # HoVer-Net sums the soft Dice loss over both NP channels: np_dice + np_dice_background
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 16, 16)
    nuclei = (torch.rand(2, 16, 16) > 0.7).long()
    outputs = {"np": logits}
    targets = {"np": nuclei}
    terms = NucleiLoss({"np_dice": 1.0, "np_dice_background": 1.0})(outputs, targets)
    probs = logits.softmax(dim=1)
    onehot = torch.nn.functional.one_hot(nuclei, 2).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    per_channel = 1 - (2 * (probs * onehot).sum(dims)) / (probs.sum(dims) + onehot.sum(dims))
    assert terms["np_dice"].item() == pytest.approx(per_channel[1].item(), rel=1e-5)
    assert terms["np_dice_background"].item() == pytest.approx(per_channel[0].item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(per_channel.sum().item(), rel=1e-5)
    # off by default: not computed, not logged
    assert "np_dice_background" not in NucleiLoss({"np_dice": 1.0})(outputs, targets)
