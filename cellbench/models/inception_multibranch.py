"""``inception_multibranch``: the Inception-like CNN of the seeds/002 Tiny ImageNet study.

stem: conv 3x3 (-> 64) + ReLU; then M modules, each three parallel branches
    1x1 conv + ReLU | 3x3 conv + ReLU | 3x3 max-pool (stride 1) + 1x1 conv + ReLU
concatenated on channels and batch-normalised; a 2x2 max-pool after every second module except
the last (M=4: after module 2, 64->32 px; M=6: after modules 2 and 4, 64->32->16 px); global
average pool and a linear classifier. Convolutions carry no bias (a BatchNorm follows), which is
what reproduces the seed's parameter counts exactly: 492,424 (M=4) and 763,528 (M=6) for 200
classes with branch_channels (64, 64, 64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["InceptionModule", "InceptionMultibranch"]


class InceptionModule(nn.Module):
    def __init__(self, in_chs: int, branch_channels: Sequence[int], downsample: bool = False):
        super().__init__()
        c1, c3, cp = branch_channels
        self.branch1x1 = nn.Sequential(nn.Conv2d(in_chs, c1, 1, bias=False), nn.ReLU(inplace=True))
        self.branch3x3 = nn.Sequential(
            nn.Conv2d(in_chs, c3, 3, padding=1, bias=False), nn.ReLU(inplace=True)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(in_chs, cp, 1, bias=False),
            nn.ReLU(inplace=True),
        )
        self.out_chs = c1 + c3 + cp
        self.bn = nn.BatchNorm2d(self.out_chs)
        self.downsample = nn.MaxPool2d(2, stride=2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch_pool(x)], dim=1)
        return self.downsample(self.bn(x))


class InceptionMultibranch(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        num_modules: int = 6,
        branch_channels: Sequence[int] = (64, 64, 64),
        stem_channels: int = 64,
        downsample_every: int = 2,
        dropout: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        if len(branch_channels) != 3:
            raise ValueError(
                f"inception_multibranch: branch_channels needs 3 widths (1x1, 3x3, pool), "
                f"got {list(branch_channels)}"
            )
        if num_modules < 1:
            raise ValueError(f"inception_multibranch: num_modules must be >= 1, got {num_modules}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_channels, 3, padding=1, bias=False), nn.ReLU(inplace=True)
        )
        modules = []
        self.feature_info = [dict(num_chs=stem_channels, reduction=1, module="stem")]
        prev, reduction = stem_channels, 1
        for i in range(1, num_modules + 1):
            downsample = i % downsample_every == 0 and i < num_modules
            block = InceptionModule(prev, branch_channels, downsample=downsample)
            modules.append(block)
            prev = block.out_chs
            reduction *= 2 if downsample else 1
            self.feature_info.append(
                dict(num_chs=prev, reduction=reduction, module=f"blocks.{i - 1}")
            )
        self.blocks = nn.Sequential(*modules)
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=dropout)

    # timm model API
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^blocks\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "inception_multibranch": {
            "url": "",
            "num_classes": 200,
            "input_size": (3, 64, 64),
            "pool_size": None,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "first_conv": "stem.0",
            "classifier": "head.fc",
        }
    }
)


@register_model
def inception_multibranch(pretrained: bool = False, **kwargs) -> InceptionMultibranch:
    """seeds/002 Inception-like multibranch CNN; args num_modules (M) and branch_channels."""
    if "drop_rate" in kwargs:
        kwargs.setdefault("dropout", kwargs.pop("drop_rate"))
    return build_model_with_cfg(InceptionMultibranch, "inception_multibranch", pretrained, **kwargs)
