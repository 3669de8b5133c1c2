"""The streaming pipeline: results in the items' order whatever the workers, every stage timed,
a bounded number of tiles read ahead; the stages ``features extract`` uses on their own (reader,
background writer, reused host slots)."""

from __future__ import annotations

import operator
import os
import threading

import numpy as np
import pytest

from cellbench.inference.pipeline import (
    BackgroundWriter,
    HostStaging,
    StageClock,
    cores_beside,
    prefetched,
    stream,
)


@pytest.mark.parametrize("workers", [0, 2])
def test_results_come_back_in_order_through_every_stage(workers):
    batches = []

    def forward(batch):
        batches.append(len(batch))
        return [int(tile.sum()) for tile in batch]  # 4 * item

    clock = StageClock()
    items = list(range(23))
    out = list(
        stream(
            items,
            lambda i: np.full((2, 2), i),
            forward,
            operator.add,  # payload + job: runs in the worker processes
            batch_size=5,
            readers=3,
            workers=workers,
            clock=clock,
        )
    )
    assert [i for i, _ in out] == items
    assert [r for _, r in out] == [5 * i for i in items]
    assert batches == [5, 5, 5, 5, 3]
    assert clock.items == 23 and clock.wall > 0 and clock.bottleneck in clock.seconds
    assert all(v >= 0 for v in clock.seconds.values()) and clock.seconds["forward"] > 0


class RecordingReader:
    """A reader run by several threads that notes which items it has started."""

    def __init__(self, value):
        self.value, self.started, self.lock = value, [], threading.Lock()

    def __call__(self, i):
        with self.lock:
            self.started.append(i)
        return self.value(i)

    def furthest(self) -> int:
        with self.lock:
            return max(self.started)


def test_reads_stay_a_bounded_distance_ahead_of_the_consumer():
    read = RecordingReader(lambda i: np.zeros((1,), np.uint8))
    ahead = []
    for i, _ in stream(
        range(1000), read, lambda b: [0] * len(b), lambda p, j: p, batch_size=4, readers=2
    ):
        ahead.append(read.furthest() - i)
    assert max(ahead) <= 2 * 4 + 2 + 4 + 2  # prefetch + payloads waiting: not the 1000 items


def test_prefetched_reads_in_order_at_most_depth_ahead():
    read = RecordingReader(lambda i: i * i)
    seen = []
    for i, value in prefetched(range(50), read, readers=3, depth=4):
        seen.append((i, value, read.furthest()))
    assert [(i, v) for i, v, _ in seen] == [(i, i * i) for i in range(50)]
    assert max(furthest - i for i, _, furthest in seen) <= 3  # depth 4: this one and 3 more


def test_background_writer_keeps_order_bounds_the_queue_and_raises_the_first_error():
    import time

    done, waiting = [], []
    writer = BackgroundWriter(depth=2)

    def write(i):
        time.sleep(0.002)  # slower than the caller: the queue fills up
        done.append(i)

    for i in range(20):
        writer.put(write, i)
        waiting.append(i + 1 - len(done))
    writer.close()
    assert done == list(range(20)) and max(waiting) <= 3  # 2 waiting + the one being written

    def fail(i):
        if i == 3:
            raise OSError(28, "No space left on device")
        done.append(i)

    done.clear()
    with pytest.raises(OSError, match="No space"), BackgroundWriter(depth=2) as writer:
        for i in range(10):
            writer.put(fail, i)
    assert done == [0, 1, 2]  # nothing after the failed write


def test_host_slots_are_reused_and_bounded():
    import torch

    staging = HostStaging(slots=2)
    first = staging.take([((3, 4), torch.float16), ((2,), torch.int64)])
    first.tensors[0].fill_(1.5)
    second = staging.take([((3, 4), torch.float16), ((2,), torch.int64)])
    first.release()
    # a third take reuses the first slot's buffers (sized for 3 rows; 2 asked: a view)
    third = staging.take([((2, 4), torch.float16), ((2,), torch.int64)])
    assert third.tensors[0].shape == (2, 4)
    assert third.tensors[0].data_ptr() == first.tensors[0].data_ptr()
    assert (third.arrays()[0] == 1.5).all()  # the same memory, not fresh pages
    second.release()
    third.release()
    copied = staging.take([((2, 4), torch.float16)]).fill([torch.ones(2, 4)])
    assert copied.arrays()[0].dtype == np.float16 and copied.arrays()[0].sum() == 8


def test_cpu_forward_leaves_a_core_to_each_worker_and_restores_its_threads():
    import os

    import torch

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        torch.set_num_threads(cores)
        with cores_beside(1, torch.device("cpu")):
            assert torch.get_num_threads() == max(1, cores - 1)
        assert torch.get_num_threads() == cores
        with cores_beside(0, torch.device("cpu")), cores_beside(1, torch.device("meta")):
            assert torch.get_num_threads() == cores  # no workers, or not the CPU: untouched
    finally:
        torch.set_num_threads(before)


KILLED_PARENT = """
import sys, numpy as np
from cellbench.inference.pipeline import stream
from tests.inference.test_pipeline import post_that_hangs
if __name__ == "__main__":
    for _ in stream(range(2), lambda i: np.zeros(1, np.uint8), lambda b: [sys.argv[1]] * len(b),
                    post_that_hangs, batch_size=1, workers=1):
        pass
"""


def post_that_hangs(pid_file, job):
    """A post-processing that notes its worker's pid and never ends (module level: picklable)."""
    import os
    import time

    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone, only not yet reaped
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_the_workers_exit_when_their_process_is_killed(tmp_path):
    """SIGKILL of a predict left its post-processing workers waiting forever (their parent is the
    fork server), holding the command's stdout open: a caller reading it never got EOF."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its killed process"
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid_file.is_file() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
