"""``simple_cnn``: the course CNN of seeds/003, sized for any input.

conv(3x3) -> ReLU -> max-pool(2), once per entry of ``channels`` (seeds/003: 32, 64), then an
adaptive average pool to ``pool_size`` x ``pool_size`` (the seed flattened a fixed 56x56 map, which
tied the model to 224-pixel inputs), a hidden fully connected layer and the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["SimpleCNN"]


class SimpleCNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
        pool_size: int = 4,
    ):
        super().__init__()
        if not channels:
            raise ValueError("simple_cnn: channels must list at least one convolution width")
        self.num_classes = num_classes
        self.in_chans = in_chans
        blocks = []
        prev = in_chans
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            prev = width
        self.features = nn.Sequential(*blocks)
        self.num_features = prev
        self.head_hidden_size = hidden
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc1 = nn.Linear(prev * pool_size * pool_size, hidden)
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=w, reduction=2 ** (i + 1), module=f"features.{i}")
            for i, w in enumerate(channels)
        ]

    # timm model API: the same calls work for built-ins and timm models
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        hidden = self.head_hidden_size
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        # one group per conv block, the hidden layer after them; the classifier is last (unmatched)
        blocks = [(r"^features\.(\d+)", None), (r"^fc1", (99999,))]
        return dict(stem=r"^features\.0\.", blocks=blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        x = self.head_drop(torch.relu(self.fc1(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 64, 64),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "features.0.0",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"simple_cnn": _cfg()})


@register_model
def simple_cnn(pretrained: bool = False, **kwargs) -> SimpleCNN:
    """seeds/003 SimpleCNN (conv-pool-conv-pool-fc-fc), adaptive pooling for any input size."""
    # timm passes ``drop_rate``; the seed calls it dropout
    if "drop_rate" in kwargs:
        kwargs.setdefault("dropout", kwargs.pop("drop_rate"))
    return build_model_with_cfg(SimpleCNN, "simple_cnn", pretrained, **kwargs)
