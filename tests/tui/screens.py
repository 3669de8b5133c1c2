"""Fixed run folders for the TUI's snapshot tests and the captures in docs/tui.md.

Every byte is a function of the arguments (fixed timestamps, no pid of this process), so a
screen of them is the same on every machine: the snapshots compare pixels, not clocks.

    python -m tests.tui.screens      # prints the text captures docs/tui.md shows
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
from pathlib import Path

from rich.console import Console

from cellbench.runs.store import RunStore

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
CONFIG = """\
task: classify
model:
  name: {model}
data:
  path: /data/shapes
train:
  epochs: {epochs}
  lr: {lr}
"""


def _line(kind: str, t: float, **fields) -> str:
    return json.dumps({"kind": kind, "time": T0 + t, **fields}) + "\n"


def write_run(
    store: RunStore,
    name: str,
    epochs: int,
    planned: int,
    lr: float = 0.001,
    model: str = "simple_cnn",
    end: str | None = "completed",
    scale: float = 1.0,
) -> Path:
    """A classification run of ``epochs`` epochs (of ``planned``): step losses, loss and metric
    curves, CPU memory, a warning; ``end`` None leaves it without run_end (crashed)."""
    run = store.create(name)
    run.config.write_text(CONFIG.format(model=model, epochs=planned, lr=lr))
    lines = [
        _line(
            "run_start", 0, task="classify", model=model, device="cpu (2 threads)",
            params=151108, resumed=False, start_epoch=0, pid=1, amp="off",
        ),
        _line("warning", 1, check="baselines", severity="info",
              message="to beat: majority class accuracy 0.25, uniform loss ln(C) 1.386"),
    ]  # fmt: skip
    history = ["epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr"]
    best = None
    for epoch in range(1, epochs + 1):
        for step in range(1, 5):
            x = epoch - 1 + step / 4
            loss = scale * (1.4 * math.exp(-x / 6) + 0.05 * math.sin(7 * x) + 0.1)
            lines.append(_line("step", 10 * epoch + step, epoch=epoch, step=4 * (epoch - 1) + step,
                               loss=round(loss, 4)))  # fmt: skip
        train = round(scale * (1.4 * math.exp(-epoch / 6) + 0.1), 4)
        val = round(scale * (1.3 * math.exp(-epoch / 7) + 0.25 + 0.01 * (epoch > 12) * epoch), 4)
        acc = round(min(0.97, 0.25 + 0.7 * (1 - math.exp(-epoch / 5))), 4)
        f1 = round(acc - 0.05, 4)
        rate = round(lr * 0.5 * (1 + math.cos(math.pi * epoch / planned)), 8)
        if best is None or val < best["value"]:
            best = {"metric": "val_loss", "value": val, "epoch": epoch, "mode": "min"}
        lines.append(_line("epoch", 10 * epoch + 5, epoch=epoch, train_loss=train, val_loss=val,
                           metrics={"val_accuracy": acc, "val_macro_f1": f1}, lr=rate,
                           best=best, time_s=1.5))  # fmt: skip
        lines.append(_line("memory", 10 * epoch + 6, device="cpu", allocated=None, reserved=None,
                           peak=None, total=None, rss=int(5e8 + 1e6 * epoch)))  # fmt: skip
        history.append(f"{epoch},{train},{val},{acc},{f1},{rate}")
        if epoch == 3:
            lines.append(_line("warning", 36, check="train_val_gap", severity="warning",
                               message=f"val_loss {val} vs train_loss {train}"))  # fmt: skip
    if end is not None:
        lines.append(_line("run_end", 10 * epochs + 9, status=end,
                           reason=f"{epochs} epochs" if end == "completed" else
                           f"Ctrl-C during epoch {epochs + 1}; last.pt keeps epoch {epochs}",
                           best=best))  # fmt: skip
        if end == "interrupted":
            run.checkpoints.mkdir(exist_ok=True)
            run.last_checkpoint.write_bytes(b"checkpoint")
    run.events.write_text("".join(lines))
    run.history.write_text("\n".join(history) + "\n")
    return run.root


def write_gallery(root: Path) -> RunStore:
    """Three runs: a completed baseline, a crashed one, one with a higher lr stopped by hand."""
    store = RunStore(root)
    write_run(store, "baseline", epochs=20, planned=20)
    write_run(store, "wide", epochs=8, planned=20, model="resnet18", end=None, scale=1.1)
    write_run(store, "lr-high", epochs=14, planned=20, lr=0.01, end="interrupted", scale=1.2)
    write_sweep(Path(root).parent / "sweeps")
    return store


def write_sweep(root: Path) -> Path:
    """A sweep folder as ``cellbench sweep`` leaves it mid-way: two seeds of two lrs, one trial
    running (``state.json``, ``leaderboard.json``)."""
    folder = root / "lr-grid"
    folder.mkdir(parents=True, exist_ok=True)
    trials = {
        "t001": {"status": "completed", "run": "0004-lr-grid-t001-lr1e-3-s0"},
        "t002": {"status": "completed", "run": "0005-lr-grid-t002-lr1e-3-s1"},
        "t003": {"status": "completed", "run": "0006-lr-grid-t003-lr1e-2-s0"},
        "t004": {"status": "running", "run": "0007-lr-grid-t004-lr1e-2-s1"},
    }
    state = {"name": "lr-grid", "status": "running", "phases": {"grid": "running"},
             "trials": trials}  # fmt: skip

    def row(trial, config, seed, value, rank, mean, std, n):
        return {"trial": trial, "run": trials[trial]["run"], "phase": "grid", "config": config,
                "seed": seed, "status": trials[trial]["status"], "metric": "val_loss",
                "mode": "min", "value": value, "rank": rank, "mean": mean, "std": std, "n": n,
                "epochs": 20, "time_s": 61.0}  # fmt: skip

    board = {
        "sweep": "lr-grid", "status": "running", "metric": "val_loss", "mode": "min",
        "rows": [row("t001", "lr=1e-3", 0, 0.4841, 1, 0.4902, 0.0086, 2),
                 row("t002", "lr=1e-3", 1, 0.4963, 1, 0.4902, 0.0086, 2),
                 row("t003", "lr=1e-2", 0, 0.5809, 2, 0.5809, None, 1),
                 {**row("t004", "lr=1e-2", 1, None, None, None, None, 0), "status": "running"}],
        "best": None,
    }  # fmt: skip
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "leaderboard.json").write_text(json.dumps(board))
    return folder


def screen_text(app) -> str:
    """The app's current screen as plain text (what ``export_screenshot`` draws, as text)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system="truecolor", legacy_windows=False,
                      safe_box=False)  # fmt: skip
    console.print(app.screen._compositor.render_update(full=True))
    lines = console.export_text(styles=False).rstrip("\n").split("\n")
    return "\n".join(line.rstrip() for line in lines)


async def _capture(root: Path, size, keys) -> str:
    from cellbench.tui.app import CellbenchTUI

    app = CellbenchTUI(root, interval=60)
    async with app.run_test(size=size) as pilot:
        while app.polling:
            await pilot.pause(0.05)
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.2)
        return screen_text(app)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        write_gallery(Path("runs"))
        views = {
            "runs at 80x24": ((80, 24), []),
            "runs at 160x48": ((160, 48), []),
            "a metric (val_accuracy)": ((100, 30), ["m", "down", "down", "enter"]),
            "crashed run, log scale": ((100, 30), ["k", "l"]),
            "compare": ((120, 30), ["space", "k", "k", "space", "c"]),
            "GPUs": ((100, 12), ["g"]),
            "sweep": ((100, 14), ["w", "enter"]),
            "stop": ((100, 30), ["k", "s"]),
        }
        for title, (size, keys) in views.items():
            print(f"==== {title}")
            print(asyncio.run(_capture(Path("runs"), size, keys)))


if __name__ == "__main__":
    main()
