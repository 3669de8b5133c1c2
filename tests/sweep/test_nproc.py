"""Sweeps of multi-process trials: each trial's train command and its GPUs."""

from __future__ import annotations

from cellbench.sweep.local import LocalPool, default_workers
from cellbench.sweep.runner import trial_args
from cellbench.sweep.trials import Trial


def test_an_n_gpu_trial_slot_gets_n_gpus():
    pool = LocalPool(2, ["0", "1", "2", "3"], gpus_per_trial=2)
    assert pool.env_for(0)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert pool.env_for(1)["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert LocalPool(4, ["0", "1"]).env_for(3)["CUDA_VISIBLE_DEVICES"] == "1"  # one GPU each


def test_cpu_trials_of_n_processes_take_n_times_the_cores(monkeypatch):
    import cellbench.sweep.local as local

    monkeypatch.setattr(local, "cpu_count", lambda: 8)
    assert default_workers(10, []) == 4
    assert default_workers(10, [], cores_per_trial=2) == 2


def test_trial_commands_carry_nproc_and_machine(tmp_path):
    from cellbench.runs.store import RunStore

    trial = Trial(
        id="t001", name="g-t001", phase="grid", params={}, seed=None, sets=["train.lr=0.1"]
    )
    store = RunStore(tmp_path / "runs")
    args, why = trial_args(trial, store, store.root, nproc=2, machine="mig-12gb")
    assert why == "new" and args[0] == "train"
    assert args[args.index("--nproc") + 1] == "2"
    assert args[args.index("--machine") + 1] == "mig-12gb"
    plain, _ = trial_args(trial, store, store.root)
    assert "--nproc" not in plain and "--machine" not in plain
