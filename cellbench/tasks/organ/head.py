"""The organ head: CLS features of a frozen backbone -> tissue (or family) logits.

Linear, or one hidden layer (GELU, dropout) when ``hidden > 0``: the CLS token of a pathology
foundation model separates PanNuke's tissues almost linearly (seeds/001: > 99% validation
accuracy), so the head stays small. The features are standardised by the training split's mean and
std, kept as buffers so that a checkpoint alone reproduces the predictions.
"""

from __future__ import annotations

import torch
from torch import nn


class OrganHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        if hidden > 0:
            self.head = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))  # a constant feature must not divide by 0

    def get_classifier(self) -> nn.Module:
        return self.head[-1]

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.head((cls.float() - self.feature_mean) / self.feature_std)
