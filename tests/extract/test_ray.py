"""Extraction on a local Ray cluster: same outputs as the local executor, survives a dead actor, resumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.extract.runner import run_extract
from tests.conftest import tiny_config, write_shards

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def rows(out) -> pd.DataFrame:
    return pd.read_parquet(out / "features").sort_values(["shard", "index"]).reset_index(drop=True)


def test_ray_outputs_equal_the_local_executor(tmp_path):
    from pipeline.extract.ray import run_extract_ray

    shards, keys = write_shards(tmp_path / "shards", 4, 3)
    run_extract(tiny_config(tmp_path / "local", shards=tuple(shards)))
    stats = run_extract_ray(tiny_config(tmp_path / "ray", shards=tuple(shards)), actors=2)
    assert stats.written == 4 and stats.images == 12 and stats.failed == []
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert list(a.key) == list(b.key) == keys
    np.testing.assert_array_equal(np.stack(a.cls.to_numpy()), np.stack(b.cls.to_numpy()))
    np.testing.assert_array_equal(np.stack(a.patch_mean.to_numpy()), np.stack(b.patch_mean.to_numpy()))


@pytest.mark.slow  # ~9 s of Ray actors; the default run keeps the parity test above
def test_a_dead_actor_is_replaced_and_every_key_comes_out_once(tmp_path):
    from pipeline.extract.ray import run_extract_ray

    shards, keys = write_shards(tmp_path / "shards", 4, 3)
    stats = run_extract_ray(tiny_config(tmp_path / "out", shards=tuple(shards)), actors=2,
                            crash_first_actor_after=1)
    assert stats.failed == [] and stats.written == 4
    df = rows(tmp_path / "out")
    assert sorted(df.key) == sorted(keys) and df.key.is_unique
    assert len(list((tmp_path / "out" / "_done").glob("*.json"))) == 4


@pytest.mark.slow  # ~20 s of Ray actors; the default run keeps the parity test above
def test_local_partial_run_finished_by_ray_and_the_reverse(tmp_path):
    from pipeline.extract.ray import run_extract_ray

    shards, keys = write_shards(tmp_path / "shards", 4, 3)
    with pytest.raises(RuntimeError, match="crash"):
        run_extract(tiny_config(tmp_path / "a", shards=tuple(shards), crash_after_shards=2))
    stats = run_extract_ray(tiny_config(tmp_path / "a", shards=tuple(shards)), actors=2)
    assert stats.skipped == 2 and stats.written == 2
    assert list(rows(tmp_path / "a").key) == keys

    run_extract_ray(tiny_config(tmp_path / "b", shards=tuple(shards[:3])), actors=2)  # a partial ray run
    local = run_extract(tiny_config(tmp_path / "b", shards=tuple(shards)))
    assert local.skipped == 3 and local.written == 1
    b = rows(tmp_path / "b")
    assert list(b.key) == keys
    np.testing.assert_array_equal(np.stack(b.cls.to_numpy()), np.stack(rows(tmp_path / "a").cls.to_numpy()))
