"""Everything a training needs, built from a config in a fixed order (so the same config gives the
same initial weights): data, model, optimizer, schedule, scaler, EMA, losses, loaders.

The trainer, the LR finder and ``--overfit-small`` all start here. Order matters for
reproducibility: the data are built first (their splits use their own seed), then every RNG is
seeded, then the model is created, so the initial weights depend only on ``train.seed``.

Under several processes (``cellbench.engine.distributed``) the order is timm's ``train.py``:
model to its GPU, channels_last, SyncBatchNorm (``train.sync_bn``), optimizer, AMP scaler, EMA
from the unwrapped model (before the DDP wrapper: the EMA needs no wrapper), then the
``DistributedDataParallel`` wrapper, then ``torch.compile`` of the wrapped model (after DDP, so
DDP's bucketing hooks stay outside the compiled graph). The training order is one
``EpochPermutationSampler`` at every world size (the permutation a single-process loader always
drew), so one process with accumulation W replays the updates of W processes; validation
gives each rank one contiguous, unpadded block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cellbench.config import Config
from cellbench.engine import distributed
from cellbench.engine.device import Precision, resolve_device, resolve_precision
from cellbench.engine.optim import build_optimizer, build_scheduler
from cellbench.engine.seeding import seed_everything, seed_worker
from cellbench.engine.step import TrainStep, channels_last, to_device
from cellbench.errors import BadInputError, UsageError
from cellbench.models.params import count_parameters
from cellbench.models.weights import WeightsReport, load_state
from cellbench.tasks.base import BatchTransform, Task, TaskData


@dataclass
class Components:
    config: Config
    task: Task
    data: TaskData
    device: torch.device
    precision: Precision
    model: nn.Module  # the plain module: state_dict, EMA and checkpoints use this one
    # what runs the training batches: ``model``, wrapped in DDP under several processes, then
    # in torch.compile when asked
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    ema: Any
    train_criterion: nn.Module
    eval_criterion: nn.Module
    batch_transform: BatchTransform | None
    train_loader: DataLoader
    val_loader: DataLoader
    train_generator: torch.Generator
    train_step: TrainStep  # the one step function, bound to forward_model and the optimizer
    init_report: WeightsReport | None = None  # what ``--init-from`` loaded
    # what validates: ``forward_model`` with one process; without the DDP wrapper under several
    # (ranks validate different numbers of batches, and DDP's forward is a collective)
    eval_model: nn.Module | None = None
    train_sampler: Any = None  # the training loader's EpochPermutationSampler (set_epoch)
    world_size: int = 1

    @property
    def effective_batch(self) -> int:
        """Samples per optimizer update: batch x accumulation x processes."""
        t = self.config.train
        return t.batch_size * t.grad_accum_steps * self.world_size

    @property
    def num_params(self) -> int:
        return count_parameters(self.model)

    def eval_prepare(self, batch: Any) -> tuple[Any, Any]:
        """A loader batch split by the task and moved to the device, for evaluation."""
        inputs, targets = self.task.split_batch(batch)
        inputs = to_device(inputs, self.device, non_blocking=True)
        if self.config.train.channels_last and self.device.type == "cuda":
            inputs = channels_last(inputs)
        return inputs, to_device(targets, self.device, non_blocking=True)


def make_loader(
    dataset: Dataset,
    config: Config,
    device: torch.device,
    *,
    shuffle: bool,
    generator: torch.Generator,
    drop_last: bool = False,
    batch_size: int | None = None,
    persistent: bool = False,
    sampler: Any = None,
) -> DataLoader:
    """``persistent`` keeps the workers between epochs. Only for loaders without randomness
    (validation): training workers are re-created each epoch from the epoch's generator, which is
    what makes augmentation in workers reproducible across a resume."""
    workers = config.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size or config.train.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=seed_worker if workers else None,
        generator=generator,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
    )


def resolve_deterministic(setting: bool | str, device: torch.device) -> bool:
    """``train.deterministic``: ``auto`` is on for CPU (the same config gives the same curve, at
    little cost) and off for CUDA (deterministic kernels and no cuDNN autotuning are slower)."""
    if setting == "auto":
        return device.type != "cuda"
    return bool(setting)


def build_components(
    config: Config,
    task: Task,
    *,
    data: TaskData | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    init_source: str = "",
) -> Components:
    train = config.train
    device = distributed.rank_device(resolve_device(train.device))
    dist = distributed.current()
    precision = resolve_precision(train.amp, device)
    task.configure(config)
    if data is None:
        data = task.build_data(config)
    if len(data.train) == 0 or len(data.val) == 0:
        raise BadInputError(
            f"{config.data.path}: empty split (train {len(data.train)}, val {len(data.val)})"
        )
    if dist.enabled and len(data.val) < dist.world_size:
        raise UsageError(
            f"{dist.world_size} processes and {len(data.val)} validation samples: every process "
            "needs at least one"
        )
    if train.grad_accum_steps < 1:
        raise UsageError(f"train.grad_accum_steps={train.grad_accum_steps}: must be 1 or more")
    even = task.needs_even_batches(config)
    if even and train.batch_size % 2:
        raise UsageError(
            f"train.batch_size={train.batch_size}: mixup/cutmix need an even batch size"
        )
    if even and len(data.train) < train.batch_size:
        raise UsageError(
            f"train.batch_size={train.batch_size}: larger than the {len(data.train)} training "
            "images, and mixup/cutmix drop the uneven last batch (nothing would be left)"
        )

    seed_everything(train.seed, deterministic=resolve_deterministic(train.deterministic, device))
    model = task.build_model(config, data)
    init_report = None
    if init_state is not None:
        # the rule of ``model.weights``: a classifier of another class count is left new and
        # reported, any other mismatch is refused
        init_report = load_state(model, init_state, init_source, model_name=config.model.name)
    model.to(device)
    if train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if train.sync_bn and dist.enabled and device.type == "cuda":  # NCCL only: gloo has none
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, train.epochs)
    scaler = precision.make_scaler()
    ema = None
    if train.ema:
        from timm.utils import ModelEmaV3

        # warmup: the decay ramps up over the first steps (timm's schedule); without it the EMA
        # sits near the weights of the first step for thousands of steps
        ema = ModelEmaV3(model, decay=train.ema_decay, use_warmup=train.ema_warmup)
    # timm's order: EMA above from the unwrapped model, then DDP, then compile the wrapper
    wrapped = distributed.wrap_model(model, device, find_unused=train.freeze_backbone_epochs > 0)
    compiled = train.compile and device.type == "cuda"
    forward_model = torch.compile(wrapped) if compiled else wrapped
    eval_model = forward_model  # one process: what trains validates
    if wrapped is not model:  # under DDP: the plain (or separately compiled) module
        eval_model = torch.compile(model) if compiled else model

    train_generator = torch.Generator()
    val_generator = torch.Generator()
    val_generator.manual_seed(train.seed)
    sampler = distributed.train_sampler(data.train, seed=train.seed)
    train_loader = make_loader(
        data.train,
        config,
        device,
        shuffle=True,
        generator=train_generator,
        drop_last=even,
        sampler=sampler,
    )
    val_sampler = None
    if dist.enabled:  # each rank reads only its own block of the validation tiles
        val_sampler = distributed.ShardSampler(len(data.val), dist.rank, dist.world_size)
    val_loader = make_loader(
        data.val,
        config,
        device,
        shuffle=False,
        generator=val_generator,
        persistent=True,
        sampler=val_sampler,
    )
    train_criterion = task.train_criterion(config, data).to(device)
    batch_transform = task.batch_transform(config, data)
    train_step = TrainStep(
        forward_model,
        train_criterion,
        optimizer,
        device,
        autocast=precision.autocast,
        scaler=scaler,
        grad_clip=train.grad_clip,
        accumulate=train.grad_accum_steps,
        batch_transform=batch_transform,
        channels_last=train.channels_last and device.type == "cuda",
        params=list(model.parameters()),
        sync_model=wrapped if wrapped is not model else None,
    )
    return Components(
        config=config,
        task=task,
        data=data,
        device=device,
        precision=precision,
        model=model,
        forward_model=forward_model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        train_criterion=train_criterion,
        eval_criterion=task.eval_criterion(config, data).to(device),
        batch_transform=batch_transform,
        train_loader=train_loader,
        val_loader=val_loader,
        train_generator=train_generator,
        train_step=train_step,
        init_report=init_report,
        eval_model=eval_model,
        train_sampler=sampler,
        world_size=dist.world_size,
    )
