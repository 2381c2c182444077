"""pipeline/bench/paired.py: the backbone alone timed inside a run, only while the loader's workers sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.bench.paired import InRunReference, Paused, child_pids, is_stopped
from pipeline.bench.throughput import end_to_end_throughput
from pipeline.extract.runner import run_extract
from tests.conftest import tiny_config, write_shards


def fake_proc(root: Path, children: dict[str, str], states: dict[str, str]) -> Path:
    """/proc with process 100 whose threads ({tid: children list}) started children, and each child's state
    ({pid: state}); command names hold a space and parentheses, as real ones may."""
    for tid, kids in children.items():
        d = root / "100" / "task" / tid
        d.mkdir(parents=True)
        (d / "children").write_text(kids)
    for pid, state in states.items():
        (root / pid).mkdir(parents=True)
        (root / pid / "stat").write_text(f"{pid} (pt worker (1)) {state} 100 100 0 0 -1 4194560 1 0 0 0 5 3\n")
    return root


def test_child_pids_and_is_stopped_read_proc(tmp_path):
    proc = fake_proc(tmp_path, {"100": "200 ", "101": "300 400 ", "102": ""},
                     {"200": "T", "300": "t", "400": "S", "500": "R", "700": "Z", "800": "D", "900": "X"})
    assert child_pids(proc, 100) == {200, 300, 400}  # every thread's list: a worker may be forked by any
    assert child_pids(tmp_path / "absent", 100) is None  # not Linux: cannot tell
    # stopped, stopped, asleep, running, gone, exited (a worker done with its shards), in I/O, dead
    assert ([is_stopped(p, proc) for p in (200, 300, 400, 500, 600, 700, 800, 900)]
            == [True, True, False, False, True, True, False, True])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir() or not hasattr(signal, "SIGSTOP"),
                    reason="needs Linux /proc and SIGSTOP")
def test_paused_stops_a_running_child_and_always_lets_it_go_on():
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    try:
        assert spin.pid in child_pids()
        with Paused({spin.pid, 999_999_999}):  # a pid that does not exist is skipped
            assert is_stopped(spin.pid)
            before = cpu_ticks(spin.pid)
            time.sleep(0.3)
            assert cpu_ticks(spin.pid) == before  # no CPU while paused
        deadline = time.time() + 10
        while cpu_ticks(spin.pid) == before and time.time() < deadline:
            time.sleep(0.05)
        assert not is_stopped(spin.pid) and cpu_ticks(spin.pid) > before  # running again
        with pytest.raises(RuntimeError), Paused({spin.pid}):
            raise RuntimeError("the forward failed")
        assert not is_stopped(spin.pid)  # continued on the way out of an error too
    finally:
        spin.kill()
        spin.wait()


class FakeBackbone:
    def __init__(self) -> None:
        self.preprocess = SimpleNamespace(input_size=(3, 8, 6))
        self.device = torch.device("cpu")
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> dict:
        self.inputs.append(x)
        time.sleep(0.01)
        return {}


class FakePause:
    def __init__(self, log: list, backbone: FakeBackbone) -> None:
        self.log, self.backbone = log, backbone

    def __call__(self, pids: set[int]) -> FakePause:
        self.pids = pids
        return self

    def __enter__(self) -> None:
        self.log.append(("stop", sorted(self.pids), len(self.backbone.inputs)))

    def __exit__(self, *exc) -> None:
        self.log.append(("go on", sorted(self.pids), len(self.backbone.inputs)))


def test_in_run_reference_pauses_the_runs_workers_around_every_nth_forward():
    backbone, log = FakeBackbone(), []
    listings = iter([{7}, {7, 21, 22}, {7, 21, 22}, None, {7, 21, 22}, {7, 21, 22}])  # first: before the run
    ref = InRunReference(batch_size=3, every=2, children=lambda: next(listings), pause=FakePause(log, backbone))
    assert ref.images_per_second is None  # nothing measured yet
    calls = []
    for _ in range(9):
        ref(backbone)
        calls.append(len(backbone.inputs))
    # due at batch 2 (forward), 4 (forward), 6 (/proc cannot tell: put off), 7 (forward), then 9
    assert calls == [0, 1, 1, 2, 2, 2, 3, 3, 4]
    assert log[:2] == [("stop", [21, 22], 0), ("go on", [21, 22], 1)]  # 7 was there before the run: left alone
    assert len(log) == 8 and ref.forwards == 4 and ref.put_off == 1 and ref.paused == 8 and ref.images == 12
    assert all(x is backbone.inputs[0] for x in backbone.inputs)  # one fixed batch, made once
    seeded = torch.randint(0, 256, (3, 3, 8, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(backbone.inputs[0], seeded)
    assert 4 * 0.01 <= ref.seconds < 2 and ref.images_per_second == pytest.approx(12 / ref.seconds)
    with pytest.raises(ValueError):
        InRunReference(3, every=0)


def test_the_runner_calls_between_batches_after_each_forward(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 2, 5)  # 10 images in batches of 4, 4 and 2 (batches span shards)
    seen = []
    stats = run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)),
                        between_batches=lambda b: seen.append(b.preprocess.input_size))
    assert stats.images == len(keys) == 10 and seen == [(3, 56, 56)] * 3


def test_end_to_end_takes_the_reference_out_of_the_wall(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 1, 8)
    ref = InRunReference(batch_size=2, every=1)
    e2e = end_to_end_throughput(tiny_config(tmp_path / "unused", shards=tuple(shards), batch_size=2), ref)
    assert e2e["images"] == 8 and e2e["reference_forwards"] == ref.forwards == 4  # workers=0: none to pause
    assert e2e["reference_images_per_second"] == pytest.approx(8 / ref.seconds)
    assert e2e["seconds"] == pytest.approx(e2e["seconds_with_reference"] - ref.seconds - ref.setup_seconds)
    assert e2e["images_per_second"] == pytest.approx(8 / e2e["seconds"])
    assert e2e["reference_put_off"] == 0 and e2e["reference_seconds"] == ref.seconds


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir() or not hasattr(signal, "SIGSTOP"),
                    reason="needs Linux /proc and SIGSTOP")
def test_pausing_the_dataloader_workers_loses_nothing(tmp_path):
    """Two real workers stopped and continued around each reference forward: every image still a row."""
    shards, keys = write_shards(tmp_path / "shards", 2, 6)
    ref = InRunReference(batch_size=2, every=1)
    cfg = tiny_config(tmp_path / "out", shards=tuple(shards), batch_size=2, workers=2)
    stats = run_extract(cfg, between_batches=ref)
    assert stats.images == len(keys) == 12 and stats.failures == 0
    assert ref.forwards == 6 and ref.put_off == 0 and ref.paused == 2 * 6  # both workers, every batch
    import pandas as pd

    assert sorted(pd.read_parquet(tmp_path / "out" / "features").key) == sorted(keys)
