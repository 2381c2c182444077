"""A pHash match links two images only when the embedding does not contradict it (--phash-min-cosine): within a
pool, against a collection and against a reference set; pHash alone decides when the embedding stage is off."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.edges import confirmed_by_embedding, pair_similarities
from pipeline.dedup.run import run_dedup
from pipeline.errors import ConfigError
from pipeline.roots.features import open_features
from pipeline.roots.rows import StreamedRows
from tests.conftest import write_feature_root

N, D = 120, 32
AGREE = (10, 11)  # one pHash, cosine 0.55: below the threshold, above the floor: a pHash edge
CHANCE = (40, 41)  # one pHash, cosine -0.2: unrelated images whose hashes met by chance


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def at_cosine(a: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    other = rng.normal(size=a.shape)
    other = unit(other - (other @ a) * a)
    return cos * a + np.sqrt(1 - cos**2) * other


@pytest.fixture
def pool(tmp_path):
    rng = np.random.default_rng(5)
    x = unit(rng.normal(size=(N, D)))
    x[AGREE[1]] = at_cosine(x[AGREE[0]], 0.55, rng)
    x[CHANCE[1]] = at_cosine(x[CHANCE[0]], -0.2, rng)
    phash = rng.integers(0, 2**63, N, dtype=np.uint64) * 2 + 1
    phash[AGREE[1]] = phash[AGREE[0]] ^ np.uint64(0b11)  # 2 bits apart
    phash[CHANCE[1]] = phash[CHANCE[0]] ^ np.uint64(0b1110)  # 3 bits apart
    write_feature_root(tmp_path / "pool", x.astype(np.float32), per_shard=40, phash=phash)
    return tmp_path / "pool", x


def linked(root, **kw) -> tuple[set[tuple[int, ...]], dict]:
    summary = run_dedup(DedupConfig(features=str(root), threshold=0.9, progress=False, **kw))
    t = pq.read_table(root / "dedup" / "groups.parquet").to_pydict()
    comps: dict[int, list[int]] = {}
    for i, c in zip(t["id"], t["component"]):
        comps.setdefault(c, []).append(i)
    return {tuple(sorted(m)) for m in comps.values() if len(m) > 1}, summary.record["stages"]["phash"]


def test_a_chance_phash_match_is_not_linked_when_the_embedding_contradicts_it(pool):
    root, _ = pool
    groups, stage = linked(root)
    assert groups == {AGREE}
    assert stage["edges"] == 1 and stage["below_min_cosine"] == 1 and stage["min_cosine"] == 0.45


def test_without_the_check_or_the_embedding_phash_alone_decides(pool):
    root, _ = pool
    for kw in ({"phash_min_cosine": -1}, {"embedding": False}):
        groups, stage = linked(root, **kw)
        assert groups == {AGREE, CHANCE}, kw
        assert stage["edges"] == 2 and stage["below_min_cosine"] == 0 and stage["min_cosine"] is None


def test_a_floor_above_the_pair_unlinks_it_too(pool):
    root, _ = pool
    groups, stage = linked(root, phash_min_cosine=0.6)
    assert groups == set() and stage["below_min_cosine"] == 2


def test_the_check_is_the_same_when_the_vectors_are_streamed(pool):
    root, x = pool
    held, _ = linked(root)
    streamed, _ = linked(root, memory_budget_gb=1e-6)  # the vectors cannot be held: read from the files
    assert streamed == held == {AGREE}
    fs = open_features(str(root))
    rows = StreamedRows(fs, "cls")
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, N, 500), rng.integers(0, N, 500)
    x16 = x.astype(np.float16).astype(np.float32)
    want = np.einsum("ij,ij->i", x16[i], x16[j])
    np.testing.assert_allclose(pair_similarities(rows, i, j, chunk=64), want, atol=1e-5)
    np.testing.assert_allclose(pair_similarities(x16, i, j), want, atol=1e-5)
    np.testing.assert_allclose(pair_similarities(rows, i, j, x16[::-1].copy(), chunk=64),  # two sets of vectors
                               np.einsum("ij,ij->i", x16[i], x16[::-1][j]), atol=1e-5)
    assert confirmed_by_embedding(x16, i, j, -1).all()
    assert (confirmed_by_embedding(x16, i, j, 0.1) == (want >= 0.1)).all()


def test_a_collection_is_not_matched_by_a_contradicted_phash(tmp_path):
    rng = np.random.default_rng(8)
    old = unit(rng.normal(size=(60, D)))
    old_phash = rng.integers(0, 2**63, 60, dtype=np.uint64) * 2 + 1
    write_feature_root(tmp_path / "old", old.astype(np.float32), keys=[f"old{i:02d}" for i in range(60)],
                       phash=old_phash)
    new = unit(rng.normal(size=(3, D)))
    new[0] = at_cosine(old[7], 0.6, rng)  # a pHash copy of old07 the embedding agrees with
    new[1] = at_cosine(old[9], 0.0, rng)  # its pHash meets old09's by chance
    phash = rng.integers(0, 2**63, 3, dtype=np.uint64) * 2 + 1
    phash[0], phash[1] = old_phash[7] ^ np.uint64(1), old_phash[9] ^ np.uint64(0b101)
    write_feature_root(tmp_path / "new", new.astype(np.float32), keys=["n0", "n1", "n2"],
                       sha1=[hashlib.sha1(f"n{i}".encode()).digest() for i in range(3)], phash=phash)
    run_dedup(DedupConfig(features=str(tmp_path / "new"), against=str(tmp_path / "old"), threshold=0.9,
                          progress=False))
    rows = {r["key"]: (r["duplicate_of"], r["reason"])
            for r in pq.read_table(tmp_path / "new" / "dedup" / "against.parquet").to_pylist()}
    assert rows == {"n0": ("old07", "phash"), "n1": (None, "unique"), "n2": (None, "unique")}


def test_a_contradicted_phash_match_does_not_contaminate(tmp_path):
    rng = np.random.default_rng(4)
    x = unit(rng.normal(size=(80, 256)))  # unrelated images far below the reference threshold 0.45
    phash = rng.integers(0, 2**63, 80, dtype=np.uint64) * 2 + 1
    write_feature_root(tmp_path / "pool", x.astype(np.float32), phash=phash)
    ref = np.stack([at_cosine(x[3], 0.44, rng), at_cosine(x[5], 0.3, rng)])  # both below the reference threshold
    ref_phash = np.stack([phash[3], phash[5]]) ^ np.uint64(0b11)
    write_feature_root(tmp_path / "ref", ref.astype(np.float32), keys=["r0", "r1"], phash=ref_phash,
                       sha1=[b"r0" * 10, b"r1" * 10])
    summary = run_dedup(DedupConfig(features=str(tmp_path / "pool"), reference=str(tmp_path / "ref"),
                                    phash_min_cosine=0.4, progress=False))
    t = pq.read_table(tmp_path / "pool" / "dedup" / "groups.parquet").to_pydict()
    assert [i for i, r in zip(t["id"], t["reason"]) if r == "contaminated"] == [3]
    touched = summary.record["stages"]["reference"]["touched"]
    assert touched["phash"] == 1 and touched["phash_below_min_cosine"] == 1 and touched["embedding"] == 0


@pytest.mark.parametrize("value", [-1.5, 1.01])
def test_the_floor_is_a_cosine(value):
    with pytest.raises(ConfigError, match="phash_min_cosine"):
        DedupConfig(features="x", phash_min_cosine=value)


def test_the_command_line_says_how_many_matches_it_left_unlinked(pool, capsys):
    from jobs import dedup as dedup_job

    root, _ = pool
    with pytest.raises(SystemExit) as done:
        dedup_job.main(["--features", str(root), "--threshold", "0.9", "--no-progress"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "phash 1 edges (+1 matches below --phash-min-cosine 0.45, not linked)" in out
