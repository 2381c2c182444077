"""The task runner (pipeline/tasks.py): results in job order whoever finishes first, errors propagate."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.errors import ConfigError, UserError
from pipeline.tasks import EXECUTORS, run_tasks


def slow_square(i: int, n: int) -> tuple[int, int, int]:
    """(i, i², pid), finishing in reverse job order: the first job sleeps longest."""
    time.sleep(0.05 * (n - i))
    return i, i * i, os.getpid()


def fail_on(i: int, bad: int) -> int:
    if i == bad:
        raise ValueError(f"task {i} failed on purpose")
    return i


@pytest.mark.parametrize("workers", [0, 2])
def test_results_come_back_in_job_order(workers):
    jobs = [(i, 6) for i in range(6)]
    results = run_tasks(slow_square, jobs, workers)
    assert [r[:2] for r in results] == [(i, i * i) for i in range(6)]
    pids = {r[2] for r in results}
    if workers == 0:
        assert pids == {os.getpid()}  # in this process, for debugging
    else:
        assert os.getpid() not in pids and 1 <= len(pids) <= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_task_raises_its_own_exception(workers):
    with pytest.raises(ValueError, match="task 3 failed on purpose"):
        run_tasks(fail_on, [(i, 3) for i in range(5)], workers)


def test_more_workers_than_jobs_and_no_jobs():
    assert [r[:2] for r in run_tasks(slow_square, [(0, 1)], workers=4)] == [(0, 0)]
    assert run_tasks(slow_square, [], workers=2) == []


@pytest.mark.parametrize("executor", ["dask", "Local", ""])
def test_an_unknown_executor_is_a_config_error(executor):
    with pytest.raises(ConfigError, match=f"executor must be one of .*got {executor!r}") as info:
        run_tasks(slow_square, [(0, 1)], workers=0, executor=executor)
    assert isinstance(info.value, UserError)
    with pytest.raises(ConfigError):  # checked before looking at the jobs
        run_tasks(slow_square, [], workers=0, executor=executor)
    assert EXECUTORS == ("local", "ray")


@pytest.mark.slow
def test_ray_tasks_give_the_local_results():
    ray = pytest.importorskip("ray")
    jobs = [(i, 4) for i in range(4)]
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        results = run_tasks(slow_square, jobs, workers=0, executor="ray")
    finally:
        ray.shutdown()
    assert [r[:2] for r in results] == [r[:2] for r in run_tasks(slow_square, jobs, workers=0)]
