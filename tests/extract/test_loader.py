"""The DataLoader side of extraction: workers that yield the CPU to the model when they share its cores."""

from __future__ import annotations

import os

import pytest
from torch.utils.data import IterableDataset

from pipeline.extract import runner
from pipeline.extract.loader import WORKER_NICENESS, create_loader
from tests.conftest import tiny_config, write_shards


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
