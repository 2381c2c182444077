"""The one task runner: run independent work units in local processes or as Ray tasks, same results either way.

Index parts, k-NN graph parts and extract's Ray actors all start Ray through here, so one cluster address
(`RAY_ADDRESS`, unset: a local cluster) and one set of options apply everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


def ensure_ray():
    """The `ray` module, connected (to RAY_ADDRESS when set, else a local cluster); a clear error without it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.40')") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def run_tasks(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int, executor: str = "local") -> list:
    """`[fn(*job) for job in jobs]`, in parallel: `workers` local processes (0: in this process, for
    debugging), or Ray tasks (one per job).

    `fn` must be a module-level function (it is pickled); results come back in job order.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if not jobs:
        return []
    if executor == "ray":
        ray = ensure_ray()
        task = ray.remote(fn)
        return ray.get([task.remote(*job) for job in jobs])
    if workers < 1:
        return [fn(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def run_on_actors(new_actor: Callable[[bool], Any], items: Sequence[Any], n_actors: int, max_retries: int = 2,
                  item_id: Callable[[Any], str] = str, started: Sequence[Any] = ()) -> tuple[list[Any], list[Any]]:
    """Feed `items` to `n_actors` Ray actors (each with a `run(item)` method), one item per actor at a time.

    `new_actor(first)` starts an actor (`first` is True for the first one: a test hook); `started` are actors
    already running, counted among the `n_actors`. An item whose actor
    dies or whose task raises goes back to the queue, at most `max_retries` more times; a dead actor is
    replaced. Returns (results of the items that succeeded, items that failed every attempt).
    """
    ray = ensure_ray()
    from ray.exceptions import RayActorError, RayTaskError

    pool = list(started) + [new_actor(i == 0 and not started) for i in range(n_actors - len(started))]
    queue = [(item, 0) for item in items]
    idle = list(pool)
    running: dict = {}
    results, failed = [], []
    try:
        while queue or running:
            while queue and idle:
                item, attempt = queue.pop(0)
                actor = idle.pop()
                running[actor.run.remote(item)] = (item, attempt, actor)
            ready, _ = ray.wait(list(running), num_returns=1)
            item, attempt, actor = running.pop(ready[0])
            try:
                results.append(ray.get(ready[0]))
            except (RayActorError, RayTaskError) as exc:
                dead = isinstance(exc, RayActorError)
                log.warning("%s failed on attempt %d (%s)%s", item_id(item), attempt + 1, type(exc).__name__,
                            ": replacing the actor" if dead else "")
                if dead:
                    actor = new_actor(False)
                    pool.append(actor)
                if attempt < max_retries:
                    queue.append((item, attempt + 1))
                else:
                    failed.append(item)
            idle.append(actor)
    finally:
        for actor in pool:
            ray.kill(actor)
    return results, failed

