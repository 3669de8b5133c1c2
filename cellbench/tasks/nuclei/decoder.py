"""A CellViT-shaped nuclei decoder on frozen-backbone tokens: NP, HV and NT maps per pixel.

Input: ``tokens`` (B, L, G, G, D), the patch tokens of L backbone blocks (shallow to deep) as the
feature store holds them (float16 on disk, cast to float32 here), and ``image`` (B, 3, H, W), the
normalised tile. Shape of CellViT (Hörst et al. 2024, ``cell_segmentation/models/cellvit.py``)
generalised to L blocks:

- the deepest block is the bottleneck, upsampled x2 by a transposed convolution;
- block k (k < L, 1-based) reaches the same resolution as stage L-k through L-k
  ``Deconv2DBlock``s (CellViT's ``decoder3``, ``decoder2``, ``decoder1`` for L = 4);
- each branch (NP, HV, NT) climbs the stages: concatenate the skip, two ``Conv2DBlock``s, a x2
  transposed convolution (CellViT's ``decoderN_upsampler``), until ``G * 2**L`` pixels;
- that map is resized to the image size (a 252-px patch-14 grid of 18 gives 288: bilinear
  interpolation back to the tile's 256, as CellViT-Optimus does; exact for patch 16 and L = 4),
  concatenated with a full-resolution conv stem of the raw image (``decoder0``), and the head
  (two ``Conv2DBlock``s and a 1x1 convolution) gives the branch's map.

``widths`` are the channels of stages 1..L (CellViT: 512, 256, 128, 64) and ``stem`` those of the
image stem (CellViT: 32, 64): small values run the CPU demo, CellViT's run an H-optimus-0-width
(D = 1536) decoder on a GPU. Dropout follows CellViT (after every conv block).

Outputs: ``{"np": (B, 2, H, W) logits, "hv": (B, 2, H, W), "nt": (B, 6, H, W) logits}`` with
NT class 0 = background. HV is linear by default, as in HoVer-Net and CellViT: the targets reach
exactly -1 and 1 at nucleus borders, which tanh only approaches with unbounded pre-activations
(pushing the MSE gradient toward 0 there); ``hv_activation="tanh"`` bounds it when wanted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellbench.data.families import TYPE_CHANNELS

BRANCHES = {"np": 2, "hv": 2, "nt": TYPE_CHANNELS}


class Conv2DBlock(nn.Sequential):
    """3x3 convolution, batch norm, ReLU, dropout (CellViT's ``Conv2DBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )


class Deconv2DBlock(nn.Sequential):
    """x2 transposed convolution then a 3x3 conv block (CellViT's ``Deconv2DBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__(
            nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )


class Branch(nn.Module):
    """One output branch: stages 1..L of upsampling with skips, then the full-resolution head."""

    def __init__(
        self,
        embed_dim: int,
        widths: Sequence[int],
        stem_out: int,
        out_ch: int,
        p: float,
        first_stage_blocks: int = 2,
    ):
        super().__init__()
        self.bottleneck = nn.ConvTranspose2d(embed_dim, widths[0], 2, stride=2)
        stages = []
        for i, width in enumerate(widths[:-1]):
            # concatenated skip (same width) in, the next stage's width out, x2; CellViT's first
            # stage (decoder3_upsampler) has one more conv block (first_stage_blocks=3)
            extra = first_stage_blocks - 2 if i == 0 else 0
            blocks = [Conv2DBlock(2 * width, width, p), Conv2DBlock(width, width, p)]
            blocks += [Conv2DBlock(width, width, p) for _ in range(extra)]
            stages.append(
                nn.Sequential(*blocks, nn.ConvTranspose2d(width, widths[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            Conv2DBlock(widths[-1] + stem_out, widths[-1], p),
            Conv2DBlock(widths[-1], widths[-1], p),
            nn.Conv2d(widths[-1], out_ch, 1),
        )

    def forward(self, deepest: torch.Tensor, skips: list[torch.Tensor], stem: torch.Tensor):
        x = self.bottleneck(deepest)
        for stage, skip in zip(self.stages, skips, strict=True):
            x = stage(torch.cat([x, skip], dim=1))
        if x.shape[-2:] != stem.shape[-2:]:
            x = F.interpolate(x, size=stem.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([x, stem], dim=1))


class NucleiDecoder(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        num_blocks: int = 4,
        widths: Sequence[int] = (512, 256, 128, 64),
        stem: Sequence[int] = (32, 64),
        dropout: float = 0.0,
        hv_activation: str = "linear",
        num_types: int = BRANCHES["nt"],
        first_stage_blocks: int = 2,
    ):
        super().__init__()
        if len(widths) != num_blocks:
            raise ValueError(
                f"decoder widths {list(widths)}: one per token block, {num_blocks} expected"
            )
        if hv_activation not in ("linear", "tanh"):
            raise ValueError(f"hv_activation={hv_activation!r}: expected 'linear' or 'tanh'")
        self.embed_dim, self.num_blocks = embed_dim, num_blocks
        self.hv_activation = hv_activation
        # skip k (k = L-1 .. 1, deep to shallow) reaches stage L-k through L-k deconv blocks
        skips = []
        for depth in range(1, num_blocks):
            chans = [embed_dim, *widths[:depth]]
            blocks = [Deconv2DBlock(chans[i], chans[i + 1], dropout) for i in range(depth)]
            skips.append(nn.Sequential(*blocks))
        self.skips = nn.ModuleList(skips)  # index 0 = the block just below the bottleneck
        stem_blocks, previous = [], 3
        for width in stem:
            stem_blocks.append(Conv2DBlock(previous, width, dropout))
            previous = width
        self.stem = nn.Sequential(*stem_blocks)
        channels = dict(BRANCHES, nt=num_types)
        self.branches = nn.ModuleDict(
            {
                name: Branch(embed_dim, widths, previous, n, dropout, first_stage_blocks)
                for name, n in channels.items()
            }
        )

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        b, num_blocks, g, g2, d = tokens.shape
        if num_blocks != self.num_blocks or d != self.embed_dim or g != g2:
            raise ValueError(
                f"tokens {tuple(tokens.shape)}: expected (B, {self.num_blocks}, G, G, "
                f"{self.embed_dim})"
            )
        # float16 from the store: the decoder computes in float32 (or autocast's dtype)
        grids = tokens.float().permute(0, 1, 4, 2, 3)  # (B, L, D, G, G)
        deepest = grids[:, -1]
        skips = [self.skips[i](grids[:, num_blocks - 2 - i]) for i in range(num_blocks - 1)]
        stem = self.stem(image)
        out = {name: branch(deepest, skips, stem) for name, branch in self.branches.items()}
        if self.hv_activation == "tanh":
            out["hv"] = torch.tanh(out["hv"])
        return out


class _Frozen:
    """Holds the frozen backbone outside the module tree: not in ``state_dict`` (checkpoints hold
    the decoder only; H-optimus-0 alone is 4.5 GB), not in ``parameters()`` (the optimizer never
    sees it), not switched to train mode, and shared, not copied, by ``deepcopy`` (the EMA)."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __deepcopy__(self, memo):
        return self


class OnlineFeatureDecoder(nn.Module):
    """``--online-features``: the frozen backbone (``cellbench.models.backbones.Backbone``) turns
    the raw uint8 tiles of the batch into tokens, then the decoder runs as on stored ones."""

    def __init__(self, backbone, decoder: NucleiDecoder):
        super().__init__()
        self._frozen = _Frozen(backbone)
        self.decoder = decoder

    @property
    def backbone(self):
        return self._frozen.backbone

    def forward(self, raw: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.maps_and_cls(raw, image)[0]

    def maps_and_cls(
        self, raw: torch.Tensor, image: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The maps and the backbone's CLS (B, D) of the same forward: what a slide's per-tile
        head (``predict --organ-run``) reads, without a second pass through the backbone."""
        cls, tokens = self.backbone.extract(raw)  # inference mode, the backbone's preprocessing
        # a copy outside inference mode: the decoder's autograd may keep it for backward
        return self.decoder(tokens.clone(), image), cls
