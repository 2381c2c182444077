"""Decontamination against a reference set must not drop a pool on meaningless similarities (issue 12, item 1)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.errors import ConfigError, InputError
from pipeline.extract.runner import run_extract
from tests.conftest import clustered_vectors, make_image, tiny_config, write_feature_root


def test_random_weights_drop_only_real_copies_of_the_reference(tmp_path):
    pool, seeds = tmp_path / "pool_photos", tmp_path / "seed_photos"
    pool.mkdir()
    seeds.mkdir()
    for i in range(20):
        make_image(100 + i, (96, 72)).save(seeds / f"seed{i:02d}.png")
    for i in range(40):
        make_image(i, (96, 72)).save(pool / f"pool{i:02d}.png")
    (pool / "copy_of_seed00.png").write_bytes((seeds / "seed00.png").read_bytes())  # byte-identical
    make_image(101, (96, 72)).transpose(0).resize((120, 90)).save(pool / "mirrored_seed01.jpg", quality=90)
    run_extract(tiny_config(tmp_path / "pool", images=str(pool)))
    run_extract(tiny_config(tmp_path / "seeds", images=str(seeds)))
    summary = run_dedup(DedupConfig(features=str(tmp_path / "pool"), reference=str(tmp_path / "seeds"),
                                    progress=False))
    groups = pq.read_table(tmp_path / "pool" / "dedup" / "groups.parquet").to_pydict()
    dropped = {k for k, r in zip(groups["key"], groups["reason"]) if r == "contaminated"}
    assert dropped == {"copy_of_seed00.png", "mirrored_seed01.jpg"}
    reference = summary.record["stages"]["reference"]
    assert reference["embedding"] is False and reference["touched"] == {"exact": 1, "phash": 2}
    assert summary.record["kept"] == 40


def test_a_decontamination_that_would_drop_most_of_the_pool_stops(tmp_path):
    x = clustered_vectors(100, 32, 2, spread=0.05, seed=1)  # two tight clusters: everything is "near"
    write_feature_root(tmp_path / "pool", x)
    ref_phash = np.random.default_rng(5).integers(0, 2**63, 2, dtype=np.uint64) * 2
    write_feature_root(tmp_path / "ref", x[[0, 1]], keys=["r0", "r1"], phash=ref_phash)
    cfg = DedupConfig(features=str(tmp_path / "pool"), reference=str(tmp_path / "ref"), progress=False)
    with pytest.raises(InputError, match=r"would drop \d+ of 100 pool images.*--force"):
        run_dedup(cfg)
    assert not (tmp_path / "pool" / "dedup" / "groups.parquet").exists()  # stopped before writing
    forced = run_dedup(DedupConfig(**{**cfg.__dict__, "force": True}))
    assert forced.record["contaminated_removed"] > 10 and forced.record["kept"] == 100 - forced.record["removed"]


def test_max_contaminated_is_a_share():
    with pytest.raises(ConfigError, match="share"):
        DedupConfig(features="x", max_contaminated=5)
