"""io.samples.iter_part: the samples of one part of a shard (loader workers sharing a shard)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io import samples as samples_module
from pipeline.io.samples import ShardEnd, iter_part, iter_samples
from pipeline.io.shards import create_folder_shards, create_shards
from tests.conftest import make_image, write_shards


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_parts_of_a_tar_are_its_samples_split_by_index(tmp_path, parts):
    shards, keys = write_shards(tmp_path, 1, 7)
    (shard,) = create_shards(tuple(shards), None, None)
    whole = list(iter_samples(shard, ShardEnd(shard.id)))
    got = {}
    for part in range(parts):
        for index, sample in iter_part(shard, ShardEnd(shard.id), part=part, parts=parts):
            assert index % parts == part and index not in got
            got[index] = sample
    assert sorted(got) == list(range(7))
    assert [got[i]["__key__"] for i in range(7)] == [s["__key__"] for s in whole] == keys
    assert all(got[i]["jpg"] == whole[i]["jpg"] for i in range(7))


def test_a_folder_part_reads_only_its_own_files(tmp_path, monkeypatch):
    for i in range(5):
        make_image(i).save(tmp_path / f"p{i}.jpg")
    (shard,) = create_folder_shards(str(tmp_path), 1000)
    read = []
    original = Path.read_bytes

    def counting(self):
        read.append(self.name)
        return original(self)

    monkeypatch.setattr(samples_module.Path, "read_bytes", counting)
    got = list(iter_part(shard, ShardEnd(shard.id), part=1, parts=2))
    assert [(i, s["__key__"]) for i, s in got] == [(1, "p1.jpg"), (3, "p3.jpg")]
    assert read == ["p1.jpg", "p3.jpg"] and got[0][1]["image"] == (tmp_path / "p1.jpg").read_bytes()
