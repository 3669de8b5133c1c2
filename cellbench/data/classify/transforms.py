"""Train and eval transforms for classification, built from ``DataConfig`` with torchvision v2.

eval:  resize (shorter side to ``image_size``) -> center crop -> float in [0, 1] -> normalize.
train: resize -> crop (``train_crop``: pad = random crop with 1/16 padding as in seeds/002,
       resized = RandomResizedCrop as in seeds/004) -> flips -> rot90 -> color jitter ->
       RandAugment -> float -> normalize -> random erasing. Each step only when its option is on.
Geometric and colour steps run on uint8 tensors (cheaper than PIL and what RandAugment expects).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from cellbench.config import DataConfig
from cellbench.errors import UsageError


class RandomRot90(torch.nn.Module):
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}: exact, no interpolation."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(image, k, dims=(-2, -1)) if k else image


def _normalize(data: DataConfig) -> v2.Normalize:
    if len(data.mean) != data.in_chans or len(data.std) != data.in_chans:
        raise UsageError(
            f"data.mean/data.std have {len(data.mean)}/{len(data.std)} values; "
            f"data.in_chans is {data.in_chans}"
        )
    return v2.Normalize(mean=list(data.mean), std=list(data.std))


def _to_channels(data: DataConfig) -> list:
    if data.in_chans == 3:
        return []
    if data.in_chans == 1:
        return [v2.Grayscale(num_output_channels=1)]
    raise UsageError(f"data.in_chans={data.in_chans}: classification images have 1 or 3 channels")


def eval_transform(data: DataConfig) -> v2.Compose:
    size = data.image_size
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            *_to_channels(data),
            v2.ToDtype(torch.float32, scale=True),
            _normalize(data),
        ]
    )


def train_transform(data: DataConfig) -> v2.Compose:
    if not data.augment:
        return eval_transform(data)
    size = data.image_size
    steps: list = [v2.ToImage()]
    if data.train_crop == "resized":
        steps.append(v2.RandomResizedCrop(size, antialias=True))
    else:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        if data.train_crop == "pad":
            steps.append(v2.RandomCrop(size, padding=max(1, size // 16)))
    if data.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=data.hflip))
    if data.vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=data.vflip))
    if data.rot90:
        steps.append(RandomRot90())
    if data.color_jitter > 0:
        # hue at a fifth of the rest: seeds/002 used 0.1/0.1/0.1 with hue 0.02
        cj = data.color_jitter
        hue = min(cj / 5, 0.5)
        steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=hue))
    if data.randaugment > 0:
        steps.append(v2.RandAugment(num_ops=data.randaugment))
    steps += [*_to_channels(data), v2.ToDtype(torch.float32, scale=True), _normalize(data)]
    if data.random_erasing > 0:
        steps.append(v2.RandomErasing(p=data.random_erasing))
    return v2.Compose(steps)
