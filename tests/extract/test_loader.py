"""The DataLoader side of extraction: workers that yield the CPU to the model when they share its cores, and
wait at the forward gate while it runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from contextlib import contextmanager, nullcontext

import pytest
import torch
from torch.utils.data import IterableDataset

from pipeline.extract import runner
from pipeline.extract.loader import (
    WORKER_NICENESS,
    ExtractDataset,
    ForwardGate,
    assemble,
    create_loader,
    processes_cpu_seconds,
)
from pipeline.extract.preprocess import Preprocess
from pipeline.io.decode import SampleError
from tests.conftest import jpeg_bytes, make_image, tiny_config, write_shards


class Niceness(IterableDataset):
    def __iter__(self):
        yield os.nice(0)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no process niceness on this OS")
def test_workers_that_share_the_models_cores_run_at_the_lowest_priority():
    parent = os.nice(0)
    assert list(create_loader(Niceness(), workers=1, pin_memory=False, yield_cpu=True)) == [WORKER_NICENESS]
    assert list(create_loader(Niceness(), workers=1, pin_memory=False, yield_cpu=False)) == [parent]
    assert list(create_loader(Niceness(), workers=0, pin_memory=False, yield_cpu=True)) == [parent]  # never the model
    assert os.nice(0) == parent


def test_extract_on_the_cpu_asks_its_workers_to_yield(tmp_path, monkeypatch):
    seen = []
    real = runner.create_loader

    def spy(dataset, workers, pin_memory, yield_cpu=False):
        seen.append((workers, pin_memory, yield_cpu))
        return real(dataset, workers, pin_memory, yield_cpu)

    monkeypatch.setattr(runner, "create_loader", spy)
    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    stats = runner.run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), workers=1))
    assert stats.images == 3 and seen == [(1, False, True)]


def test_forward_gate_closes_for_a_block_and_always_opens_again():
    gate = ForwardGate()
    assert gate.is_open
    gate.wait()  # open: returns at once
    with gate.closed():
        assert not gate.is_open
    assert gate.is_open
    with pytest.raises(RuntimeError), gate.closed():
        raise RuntimeError("the forward pass failed")
    assert gate.is_open  # a failed forward pass never leaves the workers waiting


def test_a_worker_waits_at_a_closed_gate_until_it_opens():
    gate, ctx = ForwardGate(), multiprocessing.get_context("fork")
    passed = ctx.Value("d", 0.0)

    def worker():
        gate.wait()
        passed.value = time.monotonic()

    with gate.closed():
        child = ctx.Process(target=worker)
        child.start()
        time.sleep(0.3)
        assert passed.value == 0.0  # still waiting
        opened = time.monotonic()
    child.join(10)
    assert child.exitcode == 0 and passed.value >= opened


def test_a_worker_whose_parent_is_gone_leaves_the_gate(monkeypatch):
    gate = ForwardGate()
    monkeypatch.setattr(ForwardGate, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(os, "getppid", lambda: 1)  # reparented: the model's process died with the gate closed
    with gate.closed(), pytest.raises(SystemExit):
        gate.wait()


class CountingGate(ForwardGate):
    """The runner's gate, counting the steps the workers start (shared across the fork): each sample, each of
    its stages after the decode, each batch assembly."""

    def __init__(self, closes: bool = True) -> None:
        super().__init__()
        self.started = multiprocessing.get_context("fork").Value("i", 0)
        self.closes = closes
        self.during: list[int] = []  # steps started inside each forward pass, after a grace for ones in flight

    def wait(self) -> None:
        super().wait()
        with self.started.get_lock():
            self.started.value += 1
        time.sleep(0.04)  # a step takes a while, as decoding a real photo does

    @contextmanager
    def closed(self):
        with super().closed() if self.closes else nullcontext():
            time.sleep(0.1)  # a step a worker began before the gate closed finishes (~0.04 s)
            before = self.started.value
            yield
            time.sleep(0.2)  # the forward pass made long, so that workers with work would show it
            self.during.append(self.started.value - before)


@pytest.mark.parametrize("closes", [True, False])
def test_on_the_cpu_workers_start_no_sample_while_the_model_runs(tmp_path, monkeypatch, closes):
    """With the gate (CPU) no sample, stage of one or batch assembly is begun during a forward pass; the same
    run with a gate that never closes shows the workers working then, with the queue's free places to fill (so
    the check can fail)."""
    gates = []

    def make_gate():
        gates.append(CountingGate(closes))
        return gates[-1]

    monkeypatch.setattr(runner, "ForwardGate", make_gate)
    shards, keys = write_shards(tmp_path / "shards", 2, 24)
    stats = runner.run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), workers=2, batch_size=4))
    assert stats.images == len(keys) == 48 and len(gates) == 1
    gate = gates[0]
    # per sample: before it, after its decode, after its pHashes, before it joins a batch (4 × 48); per worker
    # (one shard each): before its shard's end and before its last flush (2 × 2)
    assert gate.started.value == 4 * 48 + 2 * 2 and len(gate.during) == 12 and gate.is_open
    if closes:
        assert gate.during == [0] * 12
    else:
        assert sum(gate.during) > 0


def test_no_gate_without_workers_or_off_the_cpu(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(runner, "ForwardGate", lambda: made.append(1) or ForwardGate())
    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    assert runner.run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), workers=0)).images == 3
    assert made == []  # the loader runs in the model's process: nothing to keep off the cores


def test_process_calls_between_after_the_decode_and_after_the_phashes():
    """The gate's checks inside a sample: `between` runs once after each of the two first stages, and a sample
    that fails to decode stops before any."""
    calls = []
    dataset = ExtractDataset([], tiny_preprocess(), 4, 10**8)
    tensor, meta = dataset.process("s", 0, "k", jpeg_bytes(make_image(0)), between=lambda: calls.append(1))
    assert calls == [1, 1] and tensor.dtype == torch.uint8 and meta.key == "k"
    with pytest.raises(SampleError):
        dataset.process("s", 1, "bad", b"not an image", between=lambda: calls.append(1))
    assert calls == [1, 1]


def tiny_preprocess() -> Preprocess:
    return Preprocess(input_size=(3, 56, 56), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                      crop_pct=0.875, crop_mode="center", resize_mode="fixed", patch_size=14)


@pytest.mark.parametrize("in_worker", [True, False])
def test_batches_leave_a_worker_in_shared_memory_after_the_gate(tmp_path, monkeypatch, in_worker):
    """In a worker a batch's images are assembled straight into shared memory (not copied there later by the
    queue's feeder thread, during a forward pass), and only after a pass of the gate; in the model's own
    process they are not (nothing to send). The batches are the same either way."""
    import pipeline.extract.loader as loader_module

    passes = []

    class Gate:
        def wait(self):
            passes.append(1)

    class Info:
        id, num_workers = 0, 1

    shards, keys = write_shards(tmp_path / "shards", 1, 2)
    cfg = tiny_config(tmp_path / "out", shards=tuple(shards))
    dataset = ExtractDataset(runner.list_shards(cfg), tiny_preprocess(), 2, 10**8)
    reference = list(dataset._batches(None, None))
    monkeypatch.setattr(loader_module, "get_worker_info", lambda: Info() if in_worker else None)
    batches = list(dataset._batches(Info() if in_worker else None, Gate()))
    assert [b.metas for b in batches] == [b.metas for b in reference] and [m.key for m in batches[0].metas] == keys
    assert torch.equal(batches[0].images, reference[0].images)
    # per sample: before it, after its decode, after its pHashes, before it joins a batch; then before the
    # shard's end and before the last flush
    assert passes == [1] * (4 * 2 + 2)
    assert batches[0].images.is_shared() is in_worker


def test_processes_cpu_seconds_sums_every_thread_of_every_process(tmp_path):
    """From /proc/PID/task/TID/schedstat (ns on the CPU first): threads and processes summed; a process or
    thread that is gone, or a file that cannot be read, counts nothing; None when nothing could be read."""
    tree = {10: {10: "1500000000 7 3\n", 11: "250000000 1 1\n"}, 20: {20: "5 0 0\n", 21: "garbage\n"}}
    for pid, tids in tree.items():
        for tid, text in tids.items():
            (tmp_path / str(pid) / "task" / str(tid)).mkdir(parents=True)
            (tmp_path / str(pid) / "task" / str(tid) / "schedstat").write_text(text)
    assert processes_cpu_seconds([10], proc=str(tmp_path)) == 1.75
    assert processes_cpu_seconds([10, 20, 99], proc=str(tmp_path)) == pytest.approx(1.750000005, abs=1e-12)
    assert processes_cpu_seconds([99], proc=str(tmp_path)) is None
    assert processes_cpu_seconds([], proc=str(tmp_path)) is None


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task"), reason="no /proc/PID/task on this OS")
def test_processes_cpu_seconds_sees_a_real_child_spin_and_not_sleep():
    ctx = multiprocessing.get_context("fork")
    go, done = ctx.Event(), ctx.Event()

    def child():
        go.wait()
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        done.set()
        time.sleep(5)

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        time.sleep(0.2)
        before = processes_cpu_seconds([proc.pid])
        go.set()
        assert done.wait(10)
        spun = processes_cpu_seconds([proc.pid]) - before
        time.sleep(0.3)
        slept = processes_cpu_seconds([proc.pid]) - before - spun
    finally:
        proc.kill()
        proc.join()
    assert 0.25 < spun < 1.0 and slept < 0.05


@pytest.mark.parametrize("workers", [2, 0])
def test_the_workers_cpu_during_each_forward_pass_is_added_up(tmp_path, monkeypatch, workers):
    """Read before and after each forward pass that has images, behind the gate, for the DataLoader's workers;
    a counter that moves 0.25 s per read gives 0.25 s per forward (6 here); without workers, none is read."""
    reads = []

    def fake(pids):
        reads.append(sorted(pids))
        return 0.25 * len(reads)

    monkeypatch.setattr(runner, "processes_cpu_seconds", fake)
    shards, keys = write_shards(tmp_path / "shards", 2, 6)
    stats = runner.run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), workers=workers, batch_size=2))
    assert stats.images == 12
    if workers:
        assert len(reads) == 12 and all(len(r) == 2 for r in reads)  # two worker pids, two reads per forward
        assert stats.loader_cpu_in_forward_seconds == pytest.approx(6 * 0.25)
    else:
        assert reads == [] and stats.loader_cpu_in_forward_seconds == 0
    recorded = json.loads((tmp_path / "out" / "stats.json").read_text())["last_run"]
    assert recorded["loader_cpu_in_forward_seconds"] == pytest.approx(stats.loader_cpu_in_forward_seconds)


@pytest.mark.parametrize("shared", [False, True])
def test_assemble_equals_torch_stack_of_strided_views(shared):
    """A batch from the resize's RGBX views (channel stride 1, pixel stride 4), byte for byte torch.stack's,
    contiguous NCHW, in shared memory when asked for (and only then)."""
    gen = torch.Generator().manual_seed(0)
    rgbx = torch.randint(0, 256, (5, 40, 50, 4), dtype=torch.uint8, generator=gen)
    views = [rgbx[i, 3:35, 7:39].permute(2, 0, 1)[:3] for i in range(5)]
    assert not views[0].is_contiguous()
    batch = assemble(views, shared=shared)
    assert torch.equal(batch, torch.stack(views)) and batch.shape == (5, 3, 32, 32) and batch.dtype == torch.uint8
    assert batch.is_contiguous() and batch.is_shared() is shared
    assert torch.equal(assemble(views[:1], shared=shared), views[0][None])
