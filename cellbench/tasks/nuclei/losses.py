"""The nuclei decoder's losses as named, weighted terms (HoVer-Net / CellViT).

Terms, each weighted by ``nuclei.loss.<term>`` (0 = not computed, not logged):

=================  ==========================================================================
np_ce              cross-entropy of the 2-class nucleus/background logits
np_dice            1 - soft Dice of the nucleus probability
np_dice_background 1 - soft Dice of the background probability (HoVer-Net's NP Dice is the sum
                   of both: ``np_dice=1, np_dice_background=1``)
np_focal_tversky   (1 - Tversky(alpha=0.7 on FN, beta=0.3 on FP)) ** (3/4) of the nucleus
                   probability (Abraham & Khan 2019; CellViT's NP option)
hv_mse             mean squared error of the HV maps over every pixel
hv_msge            HoVer-Net's gradient loss: squared difference of the Sobel derivatives
                   (d/dx of the horizontal map, d/dy of the vertical map), averaged over the
                   ground truth's nucleus pixels only
nt_ce              cross-entropy of the 6 type logits (0 = background)
nt_dice            1 - soft Dice averaged over the 6 type channels
=================  ==========================================================================

The total under ``"loss"`` is the weighted sum; each computed term is also returned unweighted,
so the history shows ``train_loss_hv_msge`` and the like on their own scale.

The Sobel kernel is HoVer-Net's 5x5 one (``x / (x**2 + y**2)``), but oriented along the image
axes: HoVer-Net's reference code builds it with ``meshgrid(indexing="ij")`` and so takes the
derivative of the horizontal map along the rows; here d/dx is along the width, as the HV
convention (channel 0 = x) means.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

TERMS = (
    "np_ce",
    "np_dice",
    "np_dice_background",
    "np_focal_tversky",
    "hv_mse",
    "hv_msge",
    "nt_ce",
    "nt_dice",
)
SOBEL_SIZE = 5
EPS = 1e-8


def sobel_kernels(size: int = SOBEL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(d/dx, d/dy) kernels of HoVer-Net's ``x / (x**2 + y**2)`` form, (size, size) each."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")  # rows are y, columns are x
    norm = x * x + y * y + 1e-15
    return x / norm, y / norm


def hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): d/dx of channel 0 and d/dy of channel 1 (zero padding)."""
    kx, ky = sobel_kernels()
    weight = torch.stack([kx, ky]).unsqueeze(1).to(hv.device, hv.dtype)  # (2, 1, k, k)
    return F.conv2d(hv, weight, padding=SOBEL_SIZE // 2, groups=2)


def msge(pred_hv: torch.Tensor, true_hv: torch.Tensor, nuclei: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient error inside nuclei (``nuclei`` (B, H, W), 1 on nucleus pixels)."""
    diff = hv_gradients(pred_hv) - hv_gradients(true_hv)
    focus = nuclei.unsqueeze(1).to(diff.dtype).expand_as(diff)
    return (focus * diff * diff).sum() / (focus.sum() + EPS)


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """1 - mean over channels of the soft Dice, summed over the batch and pixels."""
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + EPS) / (total + EPS)).mean()


def focal_tversky_loss(
    prob: torch.Tensor, target: torch.Tensor, alpha=0.7, beta=0.3, gamma=0.75
) -> torch.Tensor:
    tp = (prob * target).sum()
    fn = ((1 - prob) * target).sum()
    fp = (prob * (1 - target)).sum()
    tversky = (tp + EPS) / (tp + alpha * fn + beta * fp + EPS)
    return (1 - tversky).clamp_min(0) ** gamma


class NucleiLoss(nn.Module):
    """``loss(outputs, targets)`` with outputs ``{"np", "hv", "nt"}`` of ``NucleiDecoder`` and
    targets ``{"np": (B,H,W) int, "hv": (B,2,H,W), "types": (B,H,W) int}``."""

    def __init__(self, weights: Mapping[str, float]):
        super().__init__()
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ValueError(f"nuclei.loss.{unknown[0]}: not a loss term ({', '.join(TERMS)})")
        self.weights = {k: float(v) for k, v in weights.items() if v}
        if not self.weights:
            raise ValueError("nuclei.loss: every term has weight 0")

    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]):
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        nuclei = targets["np"].long()
        if "np_ce" in w:
            terms["np_ce"] = F.cross_entropy(outputs["np"].float(), nuclei)
        if "np_dice" in w or "np_dice_background" in w or "np_focal_tversky" in w:
            np_probs = outputs["np"].float().softmax(dim=1)
            onehot = F.one_hot(nuclei, 2).permute(0, 3, 1, 2).float()
            if "np_dice" in w:
                # Dice of the nucleus channel only: the background's would dominate
                terms["np_dice"] = soft_dice_loss(np_probs[:, 1:], onehot[:, 1:])
            if "np_dice_background" in w:
                terms["np_dice_background"] = soft_dice_loss(np_probs[:, :1], onehot[:, :1])
            if "np_focal_tversky" in w:
                terms["np_focal_tversky"] = focal_tversky_loss(np_probs[:, 1], nuclei.float())
        if "hv_mse" in w:
            terms["hv_mse"] = F.mse_loss(outputs["hv"].float(), targets["hv"].float())
        if "hv_msge" in w:
            terms["hv_msge"] = msge(outputs["hv"].float(), targets["hv"].float(), nuclei)
        if "nt_ce" in w or "nt_dice" in w:
            types = targets["types"].long()
            logits = outputs["nt"].float()
            if "nt_ce" in w:
                terms["nt_ce"] = F.cross_entropy(logits, types)
            if "nt_dice" in w:
                onehot = F.one_hot(types, logits.shape[1]).permute(0, 3, 1, 2).float()
                terms["nt_dice"] = soft_dice_loss(logits.softmax(dim=1), onehot)
        total = sum(w[name] * value for name, value in terms.items())
        return {"loss": total, **terms}
