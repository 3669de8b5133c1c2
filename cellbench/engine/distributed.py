"""Several processes, one training: the process group torchrun describes, and its collectives.

``cellbench train --nproc N`` (``cellbench.engine.launch``) or ``torchrun ... -m cellbench train``
starts one process per GPU (or N CPU processes); torchrun puts ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's environment. Everything here
is PyTorch's own: ``torch.distributed`` (NCCL on CUDA, gloo on CPU),
``DistributedDataParallel``, ``DistributedSampler``; with one process every helper is a no-op,
so the single-process path is the same code.

Rules the engine keeps with several processes:

- rank 0 alone writes the run folder (events, history, checkpoints, metrics) and holds the run
  lock; a decision only rank 0 can take (creating the folder, taking the lock, a refusal) is
  broadcast to the others with ``on_main`` so that every rank raises the same error or goes on
  with the same folder, never one waiting forever for the other;
- validation metrics are reduced as sums of counts (``all_reduce`` of the accumulators' raw sums,
  never an average of per-rank averages); per-tile results (bPQ) are gathered in dataset order;
- every branch the loop takes (stop on a signal, non-finite loss, early stopping) is decided on
  reduced values, so all ranks take it together.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils.data import Sampler

T = TypeVar("T")

# the environment torchrun gives each worker (torch.distributed.run)
TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # "nccl" | "gloo" once a group is up

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = DistEnv()


def current() -> DistEnv:
    """The process group this process belongs to (one process: rank 0 of 1)."""
    return _current


def torchrun_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Rank, local rank and world size from torchrun's variables (one process without them)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return DistEnv()
    return DistEnv(
        rank=int(env.get("RANK", 0)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        world_size=int(env["WORLD_SIZE"]),
    )


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    return torchrun_env(environ).enabled


def backend_for(device_setting: str | None) -> str:
    """NCCL when the processes train on GPUs, gloo on CPU."""
    wants_cpu = str(device_setting or "auto").startswith("cpu")
    return "nccl" if torch.cuda.is_available() and not wants_cpu else "gloo"


@contextlib.contextmanager
def process_group(device_setting: str | None) -> Iterator[DistEnv]:
    """Join torchrun's process group for the length of a training (nothing with one process).

    The group is destroyed on the way out, whatever happened, so a rank that fails does not
    leave its peers blocked in a collective longer than their own failure detection."""
    global _current
    env = torchrun_env()
    if not env.enabled or torch.distributed.is_initialized():
        yield _current
        return
    import datetime

    backend = backend_for(device_setting)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    _current = DistEnv(env.rank, env.local_rank, env.world_size, backend)
    try:
        yield _current
    finally:
        _current = DistEnv()
        with contextlib.suppress(Exception):  # a peer already gone: nothing left to agree on
            torch.distributed.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """Under several processes, a CUDA device is this process's own GPU (``cuda:LOCAL_RANK``)."""
    env = current()
    if env.enabled and device.type == "cuda":
        return torch.device("cuda", env.local_rank)
    return device


def barrier() -> None:
    if current().enabled:
        torch.distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (and returned)."""
    if current().enabled:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    env = current()
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result, or raise its error on every rank.

    For what only rank 0 does to the run folder (create it, take its lock, reset it): a refusal
    there (run exists, locked: exit 4) must end every rank with the same message, and a success
    must hand the others the same folder."""
    env = current()
    if not env.enabled:
        return fn()
    box: list[Any] = [None]
    error: Exception | None = None
    if env.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:
            error = exc
            box[0] = ("error", _portable(exc))
    torch.distributed.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def _portable(exc: Exception) -> Exception:
    """``exc`` as it can cross to the other ranks: itself when it pickles (cellbench's errors
    do), else a RuntimeError with its message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def reduce_scalars(*tensors: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of the stacked float64 ``tensors`` (one collective for all of them)."""
    stacked = torch.stack([t.detach().to(torch.float64).reshape(()) for t in tensors])
    return all_reduce_sum(stacked)


class ShardSampler(Sampler[int]):
    """Validation order for several ranks: rank r reads one contiguous block of the dataset, no
    index twice and none padded in (``DistributedSampler`` pads with repeats, which would count
    some tiles twice in the metric sums). Blocks follow rank order, so gathering per-rank lists
    and concatenating them gives dataset order."""

    def __init__(self, length: int, rank: int, world_size: int):
        per = math.ceil(length / world_size) if length else 0
        self.start = min(length, rank * per)
        self.stop = min(length, self.start + per)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class EpochPermutationSampler(Sampler[int]):
    """The training order at any world size: one permutation of the dataset per epoch, rank r
    taking every world-th index of it (padded with repeats to a whole number per rank, as
    ``DistributedSampler`` does). So W processes x batch B see, update by update, the same
    samples as one process x batch B x accumulation W.

    The permutation is drawn exactly as a single-process ``DataLoader(shuffle=True)`` draws it
    from a generator seeded with ``epoch_seed(seed, epoch)`` (the loader first takes one int64
    for its workers' base seed, then ``randperm``): one process trains on the same order as
    before distributed training existed, so a study's curves and the quickstart's numbers did
    not move. ``DistributedSampler``'s own permutation (seeded ``seed + epoch``) would have."""

    def __init__(self, length: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.seed = length, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(length / world_size) if length else 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> list[int]:
        from cellbench.engine.seeding import epoch_seed

        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader's base seed
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.permutation()
        total = self.per_rank * self.world_size
        if total > len(order) and order:  # pad with repeats, so every rank steps equally often
            order += (order * math.ceil(total / len(order)))[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])

    def __len__(self) -> int:
        return self.per_rank


def train_sampler(dataset, *, seed: int) -> EpochPermutationSampler:
    """The training loader's sampler for this process (``EpochPermutationSampler``)."""
    env = current()
    return EpochPermutationSampler(
        len(dataset), seed=seed, rank=env.rank, world_size=env.world_size
    )


def wrap_model(
    model: torch.nn.Module, device: torch.device, *, find_unused: bool = False
) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (the model itself with one process).

    ``find_unused``: some parameters get no gradient for a while (a backbone frozen for the
    first epochs after DDP registered it): DDP must look for them instead of waiting."""
    if not current().enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)
