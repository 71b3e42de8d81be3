"""run_tasks: the one runner of build, fetch-imagery and predict (the Dask path: tests/test_dask_processes.py)."""

import threading
import time
from functools import partial

import pytest

from cropmap.cluster import run_tasks


def _slow(i: int, n: int) -> tuple[int, str]:
    time.sleep(0.02 * (n - i))  # the first task finishes last
    return i, threading.current_thread().name


@pytest.mark.parametrize("workers", [1, 3])
def test_results_in_task_order_and_each_reported_once(workers):
    done = []
    out = run_tasks([partial(_slow, i, 5) for i in range(5)], workers=workers, on_done=lambda i, r: done.append(i))
    assert [r[0] for r in out] == list(range(5))
    assert sorted(done) == list(range(5))
    threads = {name for _, name in out}
    if workers == 1:  # one after the other, in the caller's thread, in order
        assert threads == {threading.current_thread().name} and done == list(range(5))
    else:
        assert threading.current_thread().name not in threads
        assert done != list(range(5))  # reported as they finish, not in order


def test_threads_bounded_by_workers():
    running, peak, lock = [0], [0], threading.Lock()

    def task():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    run_tasks([task] * 12, workers=3)
    assert peak[0] == 3


def test_first_failure_raised_and_the_rest_cancelled():
    started = []

    def task(i):
        started.append(i)
        if i == 0:
            raise ValueError("block 0 failed")
        time.sleep(0.05)

    with pytest.raises(ValueError, match="block 0 failed"):
        run_tasks([partial(task, i) for i in range(40)], workers=2)
    assert len(started) < 40
    with pytest.raises(ValueError, match="block 0 failed"):
        run_tasks([partial(task, i) for i in range(3)], workers=1)
