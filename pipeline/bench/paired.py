"""The backbone alone, measured inside an end-to-end run: between its batches, with the loader's workers paused.

This machine's speed drifts by up to 2× within seconds (another tenant on the core), so a backbone measured
before and after a 20-second run is a poor reference for it. `InRunReference` is called by the runner after
a batch's forward pass; every `every` batches it stops the run's loader workers (SIGSTOP to the child
processes started since it was made: the DataLoader's), times the backbone on a fixed random batch of the
run's shape, and lets the workers go on (SIGCONT). The reference forwards are spread over the run, so the
run's end-to-end rate and the backbone's rate cover the same seconds, and during them nothing of the run
moves: a worker stopped halfway through a batch finishes it afterwards, in the run's time. The bench takes
the reference forwards' own seconds out of the run's wall time and nothing else. Where workers cannot be
found or stopped (no /proc, no SIGSTOP), a reference forward is made only when the run has no workers
(the loader then runs in this process and is idle between batches), else it is put off.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.bench.machine import sync
from pipeline.extract.backbone import Backbone

PROC = Path("/proc")
STOP_WAIT_SECONDS = 0.5  # a stopped process is seen stopped in /proc within microseconds; past this, go on


def child_pids(proc: Path = PROC, pid: int | None = None) -> set[int] | None:
    """Pids of the child processes of `pid` (this process), from every thread's /proc children list; None
    where /proc cannot tell (not Linux)."""
    tasks = proc / str(os.getpid() if pid is None else pid) / "task"
    try:
        return {int(c) for tid in os.listdir(tasks) for c in _read(tasks / tid / "children").split()}
    except OSError:
        return None


def is_stopped(child: int, proc: Path = PROC) -> bool:
    """True when the process is stopped (/proc state T or t), or has ended: a zombie (Z: a loader worker that
    finished its shards and exited, not reaped yet; it can run no more), dead (X) or gone."""
    try:
        stat = _read(proc / str(child) / "stat")
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "TtZX"  # the state follows the command name, which may hold spaces


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


class Paused:
    """Context: the given processes stopped (SIGSTOP) and seen stopped, then continued (SIGCONT) whatever
    happens inside; processes already gone are skipped."""

    def __init__(self, pids: set[int], proc: Path = PROC) -> None:
        self.pids, self.proc, self.stopped = sorted(pids), proc, []

    def __enter__(self) -> Paused:
        try:
            for pid in self.pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                self.stopped.append(pid)
            deadline = time.perf_counter() + STOP_WAIT_SECONDS
            while not all(is_stopped(p, self.proc) for p in self.stopped) and time.perf_counter() < deadline:
                time.sleep(0.0005)
        except BaseException:
            self._resume()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._resume()

    def _resume(self) -> None:
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


class InRunReference:
    """Called after each batch of a run (`run_extract(cfg, between_batches=...)`); see the module docstring.
    `children` lists this process's children (None: cannot tell); `pause` stops some of them for a while."""

    def __init__(self, batch_size: int, every: int = 2, seed: int = 0,
                 children: Callable[[], set[int] | None] = child_pids,
                 pause: Callable[[set[int]], Paused] = Paused) -> None:
        if batch_size < 1 or every < 1:
            raise ValueError("batch_size and every must be >= 1")
        self.batch_size, self.every, self.seed = batch_size, every, seed
        self._children, self._pause = children, pause
        self._before = children() or set()  # children from before the run are not its workers: left alone
        self.batches = 0  # batches seen since the last reference forward
        self.forwards = 0
        self.seconds = 0.0  # in the reference forwards
        self.setup_seconds = 0.0  # making their input, once (not in the rate, but not the run's time either)
        self.paused = 0  # workers stopped, summed over the forwards
        self.put_off = 0  # due forwards not made: the workers could not be found or stopped
        self._x: torch.Tensor | None = None

    def __call__(self, backbone: Backbone) -> None:
        self.batches += 1
        if self.batches < self.every:
            return
        children = self._children()
        workers = None if children is None else children - self._before
        if workers is None or (workers and not hasattr(signal, "SIGSTOP")):
            self.put_off += 1
            return
        if self._x is None:
            t0 = time.perf_counter()
            h, w = backbone.preprocess.input_size[1:]
            gen = torch.Generator().manual_seed(self.seed)
            self._x = torch.randint(0, 256, (self.batch_size, 3, h, w), dtype=torch.uint8,
                                    generator=gen).to(backbone.device)
            sync(backbone.device)
            self.setup_seconds = time.perf_counter() - t0
        with self._pause(workers):
            t0 = time.perf_counter()
            backbone(self._x)
            sync(backbone.device)
            self.seconds += time.perf_counter() - t0
        self.forwards += 1
        self.paused += len(workers)
        self.batches = 0

    @property
    def images(self) -> int:
        return self.forwards * self.batch_size

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.forwards else None
