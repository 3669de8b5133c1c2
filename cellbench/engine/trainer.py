"""The one training loop: an explicit epoch/step loop in the style of Lightning Fabric.

Per step: move the batch, (mixup), forward under autocast, backward (through the grad scaler
for fp16), clip, optimizer step, EMA update. Nothing in the step forces a device sync: the loss
(weighted by the batch size, so ``train_loss`` is a per-sample mean like ``val_loss``) and, with
clipping, the gradient norm are summed on the device and read back every ``train.log_every``
steps (``step`` event, progress bar, non-finite check), as a plain PyTorch loop that logs would.
Per epoch: validation (on the EMA weights with ``train.eval_ema``), schedule step, ``best.pt``
(when improved) then ``last.pt``, ``history.csv``, ``epoch`` and ``memory`` events, the
epoch-level checks, early stopping.

Ordering makes a kill at any moment recoverable: the checkpoints are written first (they carry
the history rows), ``last.pt`` last of them (the commit point), then history.csv, then the
``epoch`` event; ``--resume`` rebuilds history.csv from ``last.pt`` and rewrites ``best.pt`` if it
disagrees, so rows are never lost or duplicated and ``best.pt`` is the epoch the run reports.

Ctrl-C (SIGINT), SIGTERM (schedulers, ``timeout``, containers) and SIGHUP (a closed terminal)
set a flag checked after every step (``cellbench.signals.graceful_signals``): the loop stops at the
next step boundary, the partial epoch is discarded (``last.pt`` keeps the last completed epoch, so
a resume redoes that epoch and stays on the uninterrupted curve; interrupted in the first epoch,
``last.pt`` is written with the initial state as epoch 0), ``run_end`` says ``interrupted`` and
names the signal. A second signal aborts at once, with the same checkpoint guarantee.

Under several processes (``cellbench.engine.distributed``) every rank runs this loop on its own
share of each batch; rank 0 alone writes (events, history, checkpoints, metrics.json: the others
get a silent event writer from the session). Every decision is taken on reduced values so all
ranks take it together: the loss and gradient-norm sums, the sample count and the stop flag are
summed in one collective at each logging step and at the end of the epoch (a signal stops the
ranks at the same step: the next logging step), validation metrics are the task accumulator's
raw sums reduced across ranks. A CUDA out-of-memory error ends the run ``failed`` with a smaller
batch/accumulation suggested (``cellbench.engine.memory_guard``), checkpoints untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cellbench import __version__
from cellbench.engine import checks, distributed, memory_guard
from cellbench.engine.checkpoint import (
    repair_best,
    serialize,
    weights_fingerprint,
    write_checkpoint,
    write_epoch_checkpoints,
)
from cellbench.engine.components import Components
from cellbench.engine.device import describe_device, memory_reading
from cellbench.engine.early_stopping import Monitor, resolve_monitor
from cellbench.engine.history import History
from cellbench.engine.optim import current_lr
from cellbench.engine.report import Reporter
from cellbench.engine.seeding import capture_rng, epoch_seed, restore_rng
from cellbench.engine.step import eval_step, first_tensor
from cellbench.errors import one_line
from cellbench.runs.events import EventWriter
from cellbench.runs.layout import RunPaths
from cellbench.signals import STOP_SIGNALS, graceful_signals, signal_name

# under torchrun a Ctrl-C reaches each worker twice (from the terminal's process group and
# forwarded by torchrun): a repeat this close to the first signal is not a second Ctrl-C
REPEAT_WINDOW_S = 2.0


class NonFiniteError(Exception):
    """Raised inside the loop when the loss, the gradient norm or the weights stop being
    finite."""


class Callback:
    """Optional hooks into the loop (fault injection in tests, future UIs). All no-ops."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, Any]) -> None: ...


def _kept(epoch: int) -> str:
    """What ``last.pt`` holds after an interruption, for the ``run_end`` reason."""
    if epoch == 0:
        return "last.pt holds the initial state (epoch 0)"
    return f"last.pt keeps epoch {epoch}"


@dataclass
class TrainResult:
    status: str  # completed | failed | interrupted
    reason: str
    best: dict[str, Any]
    epochs: int  # last completed epoch
    metrics: dict[str, Any] = field(default_factory=dict)
    signum: int | None = None  # the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP)


class Trainer:
    def __init__(
        self,
        components: Components,
        paths: RunPaths,
        events: EventWriter,
        reporter: Reporter | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        resume_state: dict[str, Any] | None = None,
        init_from: str | None = None,
        reset: dict[str, Any] | None = None,
        extra_metrics: dict[str, Any] | None = None,
    ):
        self.c = components
        self.config = components.config
        self.paths = paths
        self.events = events
        self.reporter = reporter or Reporter()
        self.callbacks = list(callbacks)
        self.init_from = init_from
        self.reset = reset
        self.extra_metrics = extra_metrics or {}
        self.check_log = checks.CheckLog(self._emit_finding)

        t = self.config.train
        self.epochs = t.epochs
        self.log_every = max(1, t.log_every)
        task = components.task
        self.metric_columns = (
            ["train_loss", "val_loss"]
            + [f"{split}_loss_{term}" for term in task.loss_names for split in ("train", "val")]
            + [f"val_{m}" for m in task.metric_names]
        )
        monitor = resolve_monitor(t.early_stopping.monitor, self.metric_columns)
        self.monitor = Monitor(t.early_stopping, monitor, components.task.metric_directions)
        self.history = History(paths.history)
        self.start_epoch = 0
        self.global_step = 0
        self.backbone_frozen = False
        self.stop_requested = False
        self.stop_signal: int | None = None
        self.baselines = components.task.baselines(components.data)
        self.resumed = resume_state is not None
        self.dist = distributed.current()
        self.main = self.dist.is_main  # the one writer of the run folder
        self._agreed_stop = False  # the stop flag as all ranks agreed on it (several processes)
        self._signal_time = 0.0
        self._guard_done = False
        self._keep_initial = False  # a failure that still leaves an epoch-0 last.pt to resume
        # a resumed run keeps the fingerprint of its first start (hashing the weights is skipped)
        saved_fingerprint = (resume_state or {}).get("init_fingerprint")
        self.init_fingerprint = saved_fingerprint or weights_fingerprint(components.model)
        self._resume_rng: dict[str, Any] | None = None
        # the serialised state before the first step, written as an epoch-0 last.pt only if the
        # run is interrupted before its first checkpoint; dropped once epoch 1 is saved
        self._initial_blob: bytes | None = None
        if resume_state is not None:
            self._load_state(resume_state)

    # ------------------------------------------------------------------ state

    def _load_state(self, state: dict[str, Any]) -> None:
        c = self.c
        c.model.load_state_dict(state["model"])
        c.optimizer.load_state_dict(state["optimizer"])
        if c.scheduler is not None and state.get("scheduler") is not None:
            c.scheduler.load_state_dict(state["scheduler"])
        if c.ema is not None and state.get("ema") is not None:
            c.ema.module.load_state_dict(state["ema"])
        if c.scaler is not None and state.get("scaler") is not None:
            c.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = History(self.paths.history, state.get("history") or [])
        if self.main:
            self.history.write()  # drop rows written after this checkpoint (a kill between them)
        if state.get("early_stopping"):
            self.monitor.load_state_dict(state["early_stopping"])
        self._resume_rng = state["rng"]
        if self.main and repair_best(state, self.paths.last_checkpoint, self.paths.best_checkpoint):
            self.reporter.message(f"best.pt rewritten from last.pt (epoch {state['epoch']})")

    def checkpoint_payload(self, epoch: int) -> dict[str, Any]:
        c = self.c
        return {
            "model": c.model.state_dict(),  # the plain module: no torch.compile key prefix
            "optimizer": c.optimizer.state_dict(),
            "scheduler": c.scheduler.state_dict() if c.scheduler is not None else None,
            "ema": c.ema.module.state_dict() if c.ema is not None else None,
            "scaler": c.scaler.state_dict() if c.scaler is not None else None,
            "epoch": epoch,
            "global_step": self.global_step,
            "rng": capture_rng(),
            "best": self.monitor.state.best(),
            "config": self.config.to_dict(),
            "classes": list(self.c.data.classes),
            "task": self.c.task.name,
            "version": __version__,
            "init_fingerprint": self.init_fingerprint,
            "history": [dict(r) for r in self.history.rows],
            "early_stopping": self.monitor.state.state_dict(),
            # processes that trained it: a resume with another count keeps the effective batch
            "world_size": self.dist.world_size,
        }

    # ------------------------------------------------------------------ events

    def _emit_finding(self, finding: checks.Finding) -> None:
        self.events.emit(
            "warning", check=finding.check, severity=finding.severity, message=finding.message
        )
        self.reporter.warning(finding.check, finding.severity, finding.message)

    def _emit_memory(self) -> dict[str, Any]:
        reading = memory_reading(self.c.device)
        self.events.emit(
            "memory",
            device=reading["device"],
            allocated=reading["allocated"],
            reserved=reading["reserved"],
            peak=reading["peak"],
            rss=reading["rss"],
        )
        return reading

    def _run_start(self) -> None:
        c = self.c
        info = {
            "task": c.task.name,
            "model": c.task.model_label(self.config),
            "config_hash": self.config.hash(),
            "device": describe_device(c.device),
            "params": c.num_params,
            "init_fingerprint": self.init_fingerprint,
            "resumed": self.resumed,
            "start_epoch": self.start_epoch,
            "reset": self.reset,
            "init_from": self.init_from,
            "pid": os.getpid(),
            "amp": c.precision.mode,
            "classes": len(c.data.classes),
            "train_size": len(c.data.train),
            "val_size": len(c.data.val),
            "monitor": self.monitor.state.metric,
            "baselines": self.baselines,
            "world_size": self.dist.world_size,
            "batch_size": self.config.train.batch_size,
            "grad_accum_steps": self.config.train.grad_accum_steps,
            "effective_batch": c.effective_batch,
            "machine": self.config.train.machine,
        }
        if c.init_report is not None:
            info["init_report"] = dataclasses.asdict(c.init_report)
        self.events.emit("run_start", **info)
        self.reporter.run_start(
            {
                "run": self.paths.root.name,
                "model": info["model"],
                "device": info["device"],
                "params": f"{info['params']:,}",
                "amp": info["amp"],
                "train/val": f"{info['train_size']}/{info['val_size']}",
                "effective batch": (
                    f"{c.effective_batch} = batch {info['batch_size']} x accumulation "
                    f"{info['grad_accum_steps']} x {info['world_size']} process"
                    + ("es" if info["world_size"] > 1 else "")
                ),
                "machine": info["machine"],
                "from epoch": self.start_epoch + 1 if self.resumed else None,
            }
        )
        for finding in self._setup_findings():
            self.check_log.report(finding)

    def _setup_findings(self) -> list[checks.Finding]:
        """What the user should know about how their config was applied."""
        c, t = self.c, self.config.train
        found = [checks.Finding("data", "warning", str(m)) for m in c.data.warnings]
        if c.device.type != "cuda":
            ignored = [name for name in ("compile", "channels_last", "sync_bn") if getattr(t, name)]
            if ignored:
                names = ", ".join(f"train.{n}" for n in ignored)
                found.append(
                    checks.Finding("device", "info", f"{names}: CUDA only, ignored on cpu")
                )
        report = getattr(c.model, "weights_report", None)
        if report is not None and not self.resumed:
            found += [checks.Finding("weights", "info", line) for line in report.messages()]
        if c.init_report is not None and not self.resumed:
            found += [checks.Finding("init_from", "info", m) for m in c.init_report.messages()]
        return found

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        with graceful_signals(on_signal=self._on_signal, signals=STOP_SIGNALS):
            return self._fit()

    def _fit(self) -> TrainResult:
        status, reason = "completed", ""
        try:
            self._run_start()
            if not self.resumed:
                self.check_log.report(checks.baselines(self.baselines))
            for callback in self.callbacks:
                callback.on_train_start(self)
            if self._resume_rng is not None:
                restore_rng(self._resume_rng)  # last: nothing after this may draw random numbers
            if self.start_epoch == 0 and self.main:
                # captured after the RNG is final, so a resume from it replays epoch 1 exactly
                self._initial_blob = serialize(self.checkpoint_payload(0))
            status, reason = self._loop()
        except NonFiniteError as exc:
            status, reason = "failed", str(exc)
        except torch.cuda.OutOfMemoryError as exc:
            # no traceback: what did not fit, and a batch/accumulation that keeps the study's
            # effective batch; the checkpoints are the last completed epoch's
            status, reason = "failed", self._out_of_memory(exc)
        except RuntimeError as exc:
            if not self.dist.enabled:
                self._finish("failed", f"{type(exc).__name__}: {one_line(exc)}")
                raise
            # a peer died or was killed (its connection closed in a collective): this rank ends
            # the run as failed, with the last completed epoch's checkpoints
            saved = self.history.rows[-1]["epoch"] if self.history.rows else 0
            self._keep_initial = True
            status, reason = (
                "failed",
                (
                    f"a process of this {self.dist.world_size}-process run failed or was lost "
                    f"({one_line(exc)}); {_kept(saved)}"
                ),
            )
        except KeyboardInterrupt:
            saved = self.history.rows[-1]["epoch"] if self.history.rows else 0
            self.stop_signal = self.stop_signal or signal.SIGINT
            status, reason = "interrupted", f"aborted by a second {self._signal}; {_kept(saved)}"
        except BaseException as exc:
            self._finish("failed", f"{type(exc).__name__}: {one_line(exc)}")
            raise
        finally:
            self.reporter.close()
        if self._initial_blob is not None and (status == "interrupted" or self._keep_initial):
            # stopped inside epoch 1: the initial state, so ``--resume`` has a start to go from
            write_checkpoint(self.paths.last_checkpoint, self._initial_blob)
            self._initial_blob = None
        return self._finish(status, reason)

    def _loop(self) -> tuple[str, str]:
        for epoch in range(self.start_epoch, self.epochs):
            number = epoch + 1  # 1-based in every file
            for callback in self.callbacks:
                callback.on_epoch_start(self, number)
            self._set_backbone_frozen(epoch < self.config.train.freeze_backbone_epochs)
            started = time.perf_counter()
            train = self._train_epoch(epoch)
            if train is None:
                return "interrupted", f"{self._signal} during epoch {number}; {_kept(epoch)}"
            val = self._validate(number)
            if val is None:
                return "interrupted", f"{self._signal} during epoch {number}; {_kept(epoch)}"
            self._check_weights_finite(number)
            lr = current_lr(self.c.optimizer)  # the lr this epoch trained with
            if self.c.scheduler is not None:
                self.c.scheduler.step(epoch + 1)
            row = {"epoch": number, "train_loss": train.pop("loss"), "val_loss": val.pop("loss")}
            row.update({f"train_{k}": v for k, v in train.items()})  # train_loss_<term>
            row.update({f"val_{k}": v for k, v in val.items()})  # val_loss_<term>, val_<metric>
            row["lr"] = lr
            before = self.monitor.state.state_dict()
            improved = self.monitor.update(number, row[self.monitor.state.metric])
            self.history.rows.append(row)  # in the checkpoint first, then in history.csv
            if self.main:  # the one writer; the other ranks hold the same state
                blob = serialize(self.checkpoint_payload(number))  # once, for both files
                self._write_checkpoints(blob, improved, before)
                self.history.write()
            self._initial_blob = None
            elapsed = time.perf_counter() - started
            best = self.monitor.state.best()
            self.events.emit(
                "epoch",
                epoch=number,
                train_loss=row["train_loss"],
                val_loss=row["val_loss"],
                metrics={
                    k: v
                    for k, v in row.items()
                    if k.startswith(("val_", "train_loss_")) and k != "val_loss"
                },
                lr=lr,
                best=best,
                time_s=elapsed,
            )
            self.reporter.epoch_end(row, best, elapsed)
            self._epoch_checks(row)
            for callback in self.callbacks:
                callback.on_epoch_end(self, number, row)
            if self.monitor.should_stop():
                s = self.monitor.state
                return "completed", (
                    f"early stopping at epoch {number}: no {s.metric} improvement > "
                    f"{self.config.train.early_stopping.min_delta:g} for {s.bad_epochs} epochs"
                )
            if self._stopping():
                return "interrupted", f"{self._signal} after epoch {number}; {_kept(number)}"
        return "completed", f"{self.epochs} epochs"

    def _write_checkpoints(self, blob: bytes, improved: bool, before: dict[str, Any]) -> None:
        """best.pt (when improved) then last.pt. When a write fails (a full disk, a signal), the
        epoch's row and best are taken back as far as the files do not hold them, so run_end and
        metrics.json never name a best epoch that best.pt does not hold."""
        best_path = self.paths.best_checkpoint if improved else None
        written: list = []
        try:
            write_epoch_checkpoints(blob, self.paths.last_checkpoint, best_path, written)
        except BaseException:
            if self.paths.last_checkpoint not in written:
                self.history.rows.pop()  # last.pt still holds the previous epoch
            if best_path is not None and best_path not in written:
                self.monitor.load_state_dict(before)  # best.pt still holds the previous best
            raise

    def _set_backbone_frozen(self, frozen: bool) -> None:
        if frozen == self.backbone_frozen:
            return
        count = self.c.task.set_backbone_trainable(self.c.model, not frozen)
        self.backbone_frozen = frozen
        state = "frozen" if frozen else "unfrozen"
        self.reporter.message(f"backbone {state} ({count:,} parameters)")

    def _train_epoch(self, epoch: int) -> dict[str, float] | None:
        """One training epoch; the per-sample mean of each loss term (``loss``, ``loss_<term>``),
        or None when Ctrl-C stopped it."""
        c = self.c
        t = self.config.train
        step = c.train_step
        step.model.train()
        # this epoch's order, always: the sampler's permutation, the workers' seeds (rank 0's are
        # the single-process ones; other ranks' workers draw their own augmentations)
        c.train_sampler.set_epoch(epoch)
        c.train_generator.manual_seed(epoch_seed(t.seed, epoch) + self.dist.rank)
        limit = t.limit_train_batches
        steps = len(c.train_loader) if limit is None else min(limit, len(c.train_loader))
        self.reporter.epoch_start(epoch + 1, self.epochs, steps)
        check_first = epoch == 0 and not self.resumed
        # device-side sums, read at the sync points only: per-sample sums of the loss terms
        # (batch mean x batch size; the total first) and, with clipping, of gradient norms (a
        # non-finite one poisons it)
        sums: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros((), dtype=torch.float64, device=c.device)
        norm_sum = torch.zeros((), dtype=torch.float64, device=c.device)
        synced_loss, synced_samples = 0.0, 0
        samples, window_samples, window_start = 0, 0, time.perf_counter()
        # islice stops before fetching a batch past the limit
        for index, batch in enumerate(itertools.islice(c.train_loader, steps)):
            first = index == 0
            inputs, targets = step.prepare(*c.task.split_batch(batch))
            if check_first and first:
                self.check_log.report(checks.input_range(first_tensor(inputs), self.config.checks))
            result = step(inputs, targets, last=index + 1 == steps)
            n = result.size
            if result.grad_norm is not None:
                norm_sum += result.grad_norm
            loss_sum += result.loss * n
            if len(result.terms) > 1:
                for name, value in result.terms.items():
                    if name != "loss":
                        if name not in sums:
                            sums[name] = torch.zeros((), dtype=torch.float64, device=c.device)
                        sums[name] += value * n
            samples += n
            window_samples += n
            self.reporter.advance()
            if check_first and first:
                self.check_log.report(
                    checks.initial_loss(
                        float(result.loss),
                        c.task.expected_initial_loss(c.data),
                        self.config.checks,
                    )
                )
            if not result.stepped:
                continue
            if c.ema is not None:
                c.ema.update(c.model, step=self.global_step + 1)
            self.global_step += 1
            if not self._guard_done and self.global_step >= memory_guard.GUARD_STEPS:
                self._memory_guard()
            if self.global_step % self.log_every == 0:
                # the sync point (and, under several processes, the agreement point)
                total, seen, window = self._read_sums(
                    loss_sum, norm_sum, samples, window_samples, epoch + 1
                )
                now = time.perf_counter()
                window_loss = (total - synced_loss) / max(seen - synced_samples, 1)
                rate = window / max(now - window_start, 1e-9)
                lr = current_lr(c.optimizer)
                self.events.emit(
                    "step",
                    epoch=epoch + 1,
                    step=self.global_step,
                    loss=window_loss,
                    lr=lr,
                    samples_per_s=rate,
                )
                self.reporter.step_stats(window_loss, lr, rate)
                synced_loss, synced_samples = total, seen
                window_samples, window_start = 0, now
                if self._stopping():
                    return None
            elif not self.dist.enabled and self.stop_requested:
                return None
        total, seen, _ = self._read_sums(loss_sum, norm_sum, samples, 0, epoch + 1)
        if self._stopping():
            return None
        out = {"loss": total / max(seen, 1)}
        if sums:
            names = list(sums)
            values = distributed.all_reduce_sum(torch.stack([sums[k] for k in names])).tolist()
            for name, value in zip(names, values, strict=True):
                out[f"loss_{name}"] = value / max(seen, 1)
        return out

    def _read_sums(
        self,
        loss_sum: torch.Tensor,
        norm_sum: torch.Tensor,
        samples: int,
        window: int,
        epoch: int,
    ) -> tuple[float, int, int]:
        """One device sync for the sums: (loss sum, samples, window samples) after the non-finite
        checks. Under several processes they are summed over the ranks, with the stop flag, in
        one collective: every rank sees the same totals and stops at the same step."""
        if not self.dist.enabled:
            total, norms = torch.stack([loss_sum, norm_sum]).tolist()
        else:
            flags = [float(samples), float(window), float(self.stop_requested)]
            extra = torch.tensor(flags, dtype=torch.float64, device=loss_sum.device)
            reduced = distributed.all_reduce_sum(
                torch.cat([torch.stack([loss_sum, norm_sum]), extra])
            )
            total, norms, seen, window_seen, stops = reduced.tolist()
            samples, window = int(seen), int(window_seen)
            self._agreed_stop = stops > 0
            if self._agreed_stop:
                self._adopt_signal()
        self._raise_if_non_finite(norms, "gradient norm", epoch)
        self._raise_if_non_finite(total, "loss", epoch)
        return total, samples, window

    def _stopping(self) -> bool:
        """Whether the loop stops here: this process's flag alone, or under several processes the
        flag as the ranks last agreed on it (a rank stopping alone would leave the others waiting
        in a collective)."""
        return self._agreed_stop if self.dist.enabled else self.stop_requested

    def _agree_stop(self) -> None:
        if self.dist.enabled:
            flag = torch.tensor([float(self.stop_requested)], dtype=torch.float64)
            self._agreed_stop = bool(distributed.all_reduce_sum(flag.to(self.c.device)).item())
            if self._agreed_stop:
                self._adopt_signal()

    def _adopt_signal(self) -> None:
        """The signal that stopped the run, known on every rank (one rank may be the only one
        signalled): the reason and the exit status name it the same everywhere."""
        import torch.distributed as dist

        signum = torch.tensor([self.stop_signal or 0], dtype=torch.int64, device=self.c.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        if self.stop_signal is None and int(signum.item()):
            self.stop_signal = int(signum.item())

    # ------------------------------------------------------------------ memory

    def _memory_guard(self) -> None:
        """Once, after the first steps: their peak CUDA memory against the device's total."""
        self._guard_done = True
        finding = memory_guard.check(
            self.c.device, self.config.train, self.c.world_size, self.config.train.memory_guard
        )
        if finding is not None:
            self.check_log.report(finding)

    def _out_of_memory(self, exc: BaseException) -> str:
        self._keep_initial = True
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return memory_guard.oom_reason(self.config.train, self.c.world_size)

    def _raise_if_non_finite(self, value: float, what: str, epoch: int) -> None:
        if math.isfinite(value):
            return
        last_good = self.history.rows[-1]["epoch"] if self.history.rows else None
        finding = checks.non_finite(what, epoch, self.global_step, last_good)
        self.check_log.report(finding)
        raise NonFiniteError(finding.message)

    def _check_weights_finite(self, epoch: int) -> None:
        # catches non-finite gradients when nothing else looks at them (no clipping): the
        # optimizer turns them into non-finite weights
        norms = torch._foreach_norm([p.detach() for p in self.c.model.parameters()])
        total = float(torch.stack(norms).sum())
        self._raise_if_non_finite(total, "weights (gradients overflowed?)", epoch)

    @torch.no_grad()
    def _validate(self, epoch: int) -> dict[str, float] | None:
        c = self.c
        if self.dist.enabled:
            # each rank updated its BatchNorm running statistics with its own batches since the
            # last forward's broadcast: validate (and checkpoint) rank 0's, as timm's
            # ``distribute_bn`` does before its evaluation
            from timm.utils import distribute_bn

            distribute_bn(c.model, self.dist.world_size, reduce=False)
            if c.ema is not None:
                distribute_bn(c.ema.module, self.dist.world_size, reduce=False)
        use_ema = self.config.train.eval_ema and c.ema is not None
        model = c.ema.module if use_ema else (c.eval_model or c.forward_model)
        model.eval()
        metrics = c.task.metrics(c.data, c.device, epoch=epoch)
        for batch in c.val_loader:
            inputs, targets = c.eval_prepare(batch)
            outputs, terms = eval_step(
                model, c.eval_criterion, inputs, targets, autocast=c.precision.autocast
            )
            metrics.update(outputs, targets, terms)
            if self.stop_requested and not self.dist.enabled:
                return None
        if self.dist.enabled:
            metrics.all_reduce()  # each rank's raw sums: the metrics of the whole split
            self._agree_stop()
            if self._agreed_stop:
                return None
        return metrics.compute()

    def _epoch_checks(self, row: dict[str, Any]) -> None:
        cfg = self.config.checks
        self.check_log.report(checks.no_decrease(self.history.column("train_loss"), cfg), once=True)
        self.check_log.report(
            checks.train_val_gap(row["train_loss"], row["val_loss"], cfg), once=True
        )
        reading = self._emit_memory()
        self.check_log.report(checks.gpu_memory(reading, cfg), once=True)
        for finding in self.c.task.epoch_findings(row, self.config):
            self.check_log.report(finding, once=True)
        reason = self.c.task.undefined_metric_reason(self.config)
        for finding in checks.undefined_metrics(row, reason):  # once per metric and run
            self.check_log.report(finding, once=True)

    # ------------------------------------------------------------------ end

    def _finish(self, status: str, reason: str) -> TrainResult:
        best = self.monitor.state.best()
        rows = self.history.rows
        final = dict(rows[-1]) if rows else {}
        best_row = next((dict(r) for r in rows if r["epoch"] == best.get("epoch")), {})
        if status == "completed" and final:
            for finding in checks.expect(final, self.c.task.expect_ranges(self.config)):
                self.check_log.report(finding)
        metrics = {
            "run": self.paths.root.name,
            "task": self.c.task.name,
            "model": self.c.task.model_label(self.config),
            "status": status,
            "reason": reason,
            "epochs": final.get("epoch", 0),
            "global_step": self.global_step,
            "final": final,
            "best": {**best, "metrics": best_row},
            "baselines": self.baselines,
            "params": self.c.num_params,
            "config_hash": self.config.hash(),
            "init_fingerprint": self.init_fingerprint,
            "checks": [
                {"check": f.check, "severity": f.severity, "message": f.message}
                for f in self.check_log.findings
            ],
            **self.extra_metrics,
        }
        from cellbench.atomic import atomic_write_json

        signum = self.stop_signal if status == "interrupted" else None
        if signum is not None:
            metrics["signal"] = signal_name(signum)
        try:
            if self.main:
                atomic_write_json(self.paths.metrics, metrics)
        except OSError as exc:  # a full disk: still say how the run ended in the event stream
            reason = f"{reason}; metrics.json not written ({exc.filename}: {exc.strerror})"
        self.events.emit(
            "run_end",
            status=status,
            reason=reason,
            best=best,
            signal=signal_name(signum) if signum is not None else None,
        )
        return TrainResult(status, reason, best, final.get("epoch", 0), metrics, signum)

    # ------------------------------------------------------------------ signals

    @property
    def _signal(self) -> str:
        """How the reason names what stopped the run: "Ctrl-C", "SIGTERM", "SIGHUP"."""
        if self.stop_signal in (None, signal.SIGINT):
            return "Ctrl-C"
        return signal_name(self.stop_signal)

    def _on_signal(self, signum: int) -> None:
        # SIGINT, SIGTERM and SIGHUP alike: stop at the next step, then abort on a second one
        now = time.monotonic()
        if self.stop_requested:
            if self.dist.enabled and now - self._signal_time < REPEAT_WINDOW_S:
                return  # the same stop delivered twice: by the terminal and by torchrun
            raise KeyboardInterrupt
        self._signal_time = now
        self.stop_requested = True
        self.stop_signal = signum
        # the signal may come mid-print (a reentrant write to stderr raises RuntimeError): the
        # stop flag is what matters, a message lost is better than a traceback
        with contextlib.suppress(RuntimeError):
            self.reporter.message(
                f"{self._signal}: stopping at the next step "
                "(again to abort now; the last completed epoch is kept either way)"
            )
