"""The accelerator path of the extract loop, run on the CPU with a recording stand-in for torch.cuda: the copy
of batch N+1 is queued on the side stream before N is handed out, the compute stream waits for it, and the
host waits for a batch's features only after the next forward pass is queued."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pipeline.extract import prefetch
from pipeline.extract.prefetch import HostFeatures, has_streams, to_device_ahead


@dataclass
class B:
    images: torch.Tensor | None


class FakeStream:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def wait_stream(self, other: FakeStream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


class FakeEvent:
    def __init__(self, log: list) -> None:
        self.log = log

    def record(self, stream: FakeStream) -> None:
        self.log.append(f"event on {stream.name}")

    def synchronize(self) -> None:
        self.log.append("host waits event")


class FakeModule:
    """torch.cuda's stream API, recording what is asked of it; copies land in the log by the stream in use."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.main = FakeStream(self.log, "main")
        self.active = self.main

    def Stream(self, device):  # noqa: N802 - torch's name
        return FakeStream(self.log, "side")

    def current_stream(self, device):
        return self.active

    @contextlib.contextmanager
    def stream(self, s):
        previous, self.active = self.active, s
        yield
        self.active = previous

    def Event(self):  # noqa: N802
        return FakeEvent(self.log)


@pytest.fixture
def fake_cuda(monkeypatch):
    module = FakeModule()
    monkeypatch.setattr(prefetch, "has_streams", lambda device: True)
    monkeypatch.setattr(prefetch.torch, "get_device_module", lambda device: module)
    monkeypatch.setattr(prefetch, "_record_stream",
                        lambda t, s: module.log.append(f"batch {int(t[0])} used on {s.name}"))
    monkeypatch.setattr(prefetch, "_pinned_empty", lambda shape, dtype: torch.empty(shape, dtype=dtype))
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device):
            module.log.append(f"copy batch {int(self[0])} on {module.active.name}")
            return real_to(self, "cpu")
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return module


def test_the_next_batch_is_copied_on_the_side_stream_while_this_one_runs(fake_cuda):
    batches = [B(torch.full((2,), i)) for i in range(3)] + [B(None)]
    got = []
    for batch in to_device_ahead(iter(batches), torch.device("cuda", 0)):
        fake_cuda.log.append(f"compute {'ends' if batch.images is None else int(batch.images[0])}")
        got.append(batch)
    assert got == batches
    assert fake_cuda.log == [
        "copy batch 0 on side",
        "main waits side", "batch 0 used on main", "copy batch 1 on side", "compute 0",
        "main waits side", "batch 1 used on main", "copy batch 2 on side", "compute 1",
        "main waits side", "batch 2 used on main", "compute 2",
        "main waits side", "compute ends",
    ]


def test_features_reach_the_host_after_an_event_and_keep_their_values(fake_cuda):
    feats = {"cls": torch.arange(6, dtype=torch.float32).view(2, 3), "patch_mean": torch.ones(2, 3)}
    host = HostFeatures(feats, torch.float16)
    assert fake_cuda.log == ["event on main"]  # queued, not waited for
    out = host.numpy()
    assert fake_cuda.log[-1] == "host waits event"
    assert out["cls"].dtype == np.float16 and np.array_equal(out["cls"], np.arange(6).reshape(2, 3))


def test_on_the_cpu_nothing_is_deferred():
    assert not has_streams(torch.device("cpu")) and has_streams(torch.device("cuda", 0))
    batches = [B(torch.zeros(1)), B(None)]
    assert list(to_device_ahead(batches, torch.device("cpu"))) == batches
    host = HostFeatures({"cls": torch.ones(1, 2)}, torch.float32)
    assert host.event is None and host.numpy()["cls"].tolist() == [[1.0, 1.0]]


def test_extract_with_the_host_one_batch_behind_writes_the_same_rows(tmp_path, monkeypatch):
    """The accelerator's loop order (features taken one batch later, shard ends after them) on the CPU:
    every shard written, every row equal to the in-order loop's."""
    import pandas as pd

    from pipeline.extract import runner
    from tests.conftest import tiny_config, write_shards

    shards, keys = write_shards(tmp_path / "shards", 3, 5)
    runner.run_extract(tiny_config(tmp_path / "now", shards=tuple(shards), batch_size=4))
    monkeypatch.setattr(runner, "has_streams", lambda device: True)
    stats = runner.run_extract(tiny_config(tmp_path / "later", shards=tuple(shards), batch_size=4))
    assert stats.images == 15 and stats.written == 3
    a, b = (pd.read_parquet(tmp_path / name / "features") for name in ("now", "later"))
    assert list(b.key) == list(a.key) == keys
    assert np.array_equal(np.stack(a.cls), np.stack(b.cls))
