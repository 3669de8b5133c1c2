"""The one step function every part of the engine runs: training epochs, ``--overfit-small``,
the LR range test, validation and ``eval``.

A batch is whatever the task's dataset yields; ``Task.split_batch`` turns it into
``(inputs, targets)``, each a tensor or a (nested) mapping/tuple of tensors: classification
gives an image tensor and a label tensor, the nuclei decoder ``{"tokens", "image"}`` and
``{"np", "hv", "types"}``. ``to_device`` moves either shape; a model gets a mapping as keyword
arguments (``model(**inputs)``) and anything else positionally, and may return a tensor or a
mapping of heads. A criterion returns either a tensor or named terms with the total under
``"loss"`` (``{"loss": ..., "np_ce": ..., "hv_msge": ...}``); ``loss_terms`` normalises both, so
the loop can log every term (history columns ``train_loss_<term>``, ``val_loss_<term>``).

``TrainStep`` is forward under autocast, loss, backward through the fp16 grad scaler, clipping
and gradient accumulation (``train.grad_accum_steps``: the loss is divided by the number of
micro-batches and the optimizer steps on the last one of each window). It performs no device
sync: the caller reads the returned detached tensors when it chooses to, as a plain loop would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

TOTAL = "loss"  # the key of the total in a criterion's named terms


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor in it (nested mappings, lists, tuples) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The tensor the sanity checks look at: ``obj`` itself, its ``"image"``, or the first one."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        if isinstance(obj.get("image"), torch.Tensor):
            return obj["image"]
        values: Iterable[Any] = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return None
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def batch_size(obj: Any) -> int:
    tensor = first_tensor(obj)
    return int(tensor.shape[0]) if tensor is not None and tensor.dim() else 1


def channels_last(obj: Any) -> Any:
    """4-d tensors (images) in channels_last memory format; anything else unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
    if isinstance(obj, Mapping):
        return {k: channels_last(v) for k, v in obj.items()}
    return obj


def call_model(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def to_float(outputs: Any) -> Any:
    """Outputs computed under autocast, as float32 (metrics and eval losses in full precision)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {k: to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(to_float(v) for v in outputs)
    return outputs


def loss_terms(value: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A criterion's result as named terms, the total under ``"loss"``."""
    if isinstance(value, Mapping):
        if TOTAL not in value:
            raise ValueError(f"a criterion returning named terms must include '{TOTAL}'")
        return dict(value)
    return {TOTAL: value}


def default_autocast() -> AbstractContextManager:
    return nullcontext()


@dataclass
class StepResult:
    """What one micro-batch gave; tensors are detached and stay on the device (no sync)."""

    inputs: Any
    targets: Any
    outputs: Any
    terms: dict[str, torch.Tensor]
    size: int
    stepped: bool  # the optimizer stepped after this micro-batch
    grad_norm: torch.Tensor | None  # pre-clip norm, when clipping ran without a scaler

    @property
    def loss(self) -> torch.Tensor:
        return self.terms[TOTAL]


class TrainStep:
    """Forward, loss, backward, scaler, clipping, accumulation: one call per micro-batch."""

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable[[Any, Any], Any],
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        autocast: Callable[[], AbstractContextManager] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
        accumulate: int = 1,
        batch_transform: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        channels_last: bool = False,
        params: list[nn.Parameter] | None = None,
        sync_model: nn.Module | None = None,
    ):
        if accumulate < 1:
            raise ValueError(f"gradient accumulation needs >= 1 micro-batches, got {accumulate}")
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.device = device
        self.autocast = autocast or default_autocast
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.accumulate = accumulate
        self.batch_transform = batch_transform
        self.channels_last = channels_last
        self.params = params if params is not None else list(model.parameters())
        self._pending = 0  # micro-batches whose gradients wait for an optimizer step
        # the DDP wrapper under several processes: its gradient all-reduce is skipped on the
        # micro-batches that do not step (``no_sync``), as timm's train.py does
        self.sync_model = sync_model

    def prepare(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Move a split batch to the device (and channels_last, and the batch transform)."""
        inputs = to_device(inputs, self.device, non_blocking=True)
        targets = to_device(targets, self.device, non_blocking=True)
        if self.channels_last:
            inputs = channels_last(inputs)
        if self.batch_transform is not None:
            inputs, targets = self.batch_transform(inputs, targets)
        return inputs, targets

    def __call__(self, inputs: Any, targets: Any, *, last: bool = False) -> StepResult:
        """One micro-batch already on the device (``prepare``). ``last`` closes an accumulation
        window early (the end of an epoch), so no gradient crosses an epoch."""
        if self._pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
        stepped = last or self._pending + 1 >= self.accumulate
        local = nullcontext()
        if not stepped and self.sync_model is not None:
            local = self.sync_model.no_sync()  # reduced once, with the window's last backward
        with local:
            with self.autocast():
                outputs = call_model(self.model, inputs)
                terms = loss_terms(self.criterion(outputs, targets))
            loss = terms[TOTAL]
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        self._pending += 1
        grad_norm = self._optimizer_step() if stepped else None
        return StepResult(
            inputs=inputs,
            targets=targets,
            outputs=outputs,
            terms={k: v.detach() for k, v in terms.items()},
            size=batch_size(inputs),
            stepped=stepped,
            grad_norm=grad_norm,
        )

    def _optimizer_step(self) -> torch.Tensor | None:
        self._pending = 0
        norm = None
        if self.scaler is not None:
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            if self.grad_clip:
                # returned only here: under the scaler an overflowed norm is normal (step skipped)
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()
        return norm


def eval_step(
    model: nn.Module,
    criterion: Callable[[Any, Any], Any] | None,
    inputs: Any,
    targets: Any,
    *,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Forward under autocast (no grad is the caller's context), outputs as float32, and the
    criterion's named terms on them (empty without a criterion)."""
    with (autocast or default_autocast)():
        outputs = call_model(model, inputs)
    outputs = to_float(outputs)
    if criterion is None:
        return outputs, {}
    return outputs, {k: v.detach() for k, v in loss_terms(criterion(outputs, targets)).items()}
