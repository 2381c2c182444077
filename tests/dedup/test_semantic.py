"""Semantic dedup (issue 15): keep policies checked against brute force, and the threshold sweep against separate
runs at each threshold (pipeline/dedup/semantic.py, pipeline/dedup/sweep.py, jobs/dedup.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import dedup as dedup_job
from pipeline.dedup.config import DedupConfig, parse_sweep
from pipeline.dedup.edges import rescored_edges
from pipeline.dedup.run import run_dedup
from pipeline.dedup.semantic import auto_clusters, cluster_pool, random_scores
from pipeline.dedup.sweep import SWEEP_SCHEMA, format_sweep, pair_cosines
from pipeline.errors import ConfigError
from tests.conftest import write_feature_root

N, D = 240, 64
# planted near-copy groups: members = base + noise of this relative size (cos to the base ≈ 0.995 … 0.91)
NOISE = {(5, 6, 7): 0.1, (20, 21): 0.25, (40, 41, 42, 43): 0.4, (60, 61): 0.55}
IDENTICAL = (80, 81, 82)  # the same vector under three keys: hard/easy tie, broken by the smallest key
SAME_BYTES = (100, 101)  # unrelated vectors, one sha1: an exact edge at every threshold
# one pHash, cosine 0.52: under every threshold swept, above --phash-min-cosine: a perceptual edge at every threshold
SAME_PHASH = (120, 121)
SWEEP = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted_pool(root, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """240 unit vectors in 4 clusters (cos to their centre ≈ 0.55, between unrelated images < 0.65) with the
    groups above; keys sort in reverse id order so that a key tie-break differs from an id tie-break.
    Returns (the vectors as dedup reads them: float16-rounded, keys, pixels)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(4, D)))
    x = unit(centres[rng.integers(0, 4, N)] + 1.5 * rng.normal(size=(N, D)) / np.sqrt(D))
    for members, noise in NOISE.items():
        for m in members[1:]:
            x[m] = unit(x[members[0]] + noise * rng.normal(size=D) / np.sqrt(D))
    x[list(IDENTICAL)] = x[IDENTICAL[0]]
    a = x[SAME_PHASH[0]]
    other = rng.normal(size=D)
    other = unit(other - (other @ a) * a)  # orthogonal to a
    x[SAME_PHASH[1]] = 0.52 * a + np.sqrt(1 - 0.52**2) * other
    x = x.astype(np.float32)
    keys = [f"k{N - i:04d}" for i in range(N)]
    sha1 = [hashlib.sha1(k.encode()).digest() for k in keys]
    sha1[SAME_BYTES[1]] = sha1[SAME_BYTES[0]]
    phash = rng.integers(0, 2**63, N, dtype=np.uint64) * 2 + 1
    phash[SAME_PHASH[1]] = phash[SAME_PHASH[0]]
    pixels = rng.choice([100, 200, 300], N)  # ties on pixels too
    write_feature_root(root, x, keys=keys, sha1=sha1, phash=phash, pixels=pixels)
    return x.astype(np.float16).astype(np.float32), keys, pixels


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    x, keys, pixels = planted_pool(root)
    return root, x, keys, pixels


def groups_of(root, threshold: float = 0.85, **kw) -> tuple[pa.Table, dict]:
    summary = run_dedup(DedupConfig(features=str(root), threshold=threshold, k=8, progress=False, **kw))
    return pq.read_table(root / "dedup" / "groups.parquet"), summary


def brute_keepers(component: np.ndarray, score: np.ndarray, keys: list[str]) -> set[int]:
    """Per component, the member with the highest score, ties to the smallest key (a plain Python loop)."""
    keep = set()
    for c in np.unique(component):
        members = np.flatnonzero(component == c).tolist()
        keep.add(min(members, key=lambda i: (-score[i], keys[i])))
    return keep


def kept(table: pa.Table) -> set[int]:
    return set(np.flatnonzero(table.column("keep").to_numpy(zero_copy_only=False)).tolist())


# ------------------------------------------------------------------------------------------- keep policies
@pytest.mark.parametrize("policy,clusters", [("hard", 4), ("easy", None)])
def test_hard_and_easy_keep_the_member_farthest_from_or_closest_to_its_own_centroid(pool, policy, clusters):
    root, x, keys, _ = pool
    table, summary = groups_of(root, keep=policy, clusters=clusters, seed=5)
    component = table.column("component").to_numpy()
    sizes = np.bincount(component)
    grouped = np.flatnonzero(sizes[component] > 1)
    for members in [*NOISE, IDENTICAL, SAME_BYTES, SAME_PHASH]:  # the planted groups are found
        assert len(set(component[list(members)])) == 1 and sizes[component[members[0]]] >= len(members)
    k = clusters or auto_clusters(N)
    assert k == (4 if clusters else 15)
    assert summary.record["keep"] == {"policy": policy, "clusters": k, "clusters_auto": clusters is None, "seed": 5,
                               "clustered_rows": len(grouped), "seconds": summary.record["keep"]["seconds"]}
    # brute force from the same centroids: own nearest centroid, cosine distance, argmax (hard) / argmin (easy)
    centroids = cluster_pool(x, k, seed=5, rows=grouped).centroids
    assignment = np.argmax(x @ centroids.T, axis=1)
    distance = 1 - (x * centroids[assignment]).sum(1)
    assert table.column("cluster").to_numpy(zero_copy_only=False)[grouped].tolist() == assignment[grouped].tolist()
    np.testing.assert_allclose(table.column("centroid_distance").to_numpy(zero_copy_only=False)[grouped],
                               distance[grouped], atol=1e-5)
    assert table.column("cluster").null_count == N - len(grouped)  # only grouped rows are ranked
    score = distance if policy == "hard" else -distance
    assert kept(table) == brute_keepers(component, score, keys)
    # the identical vectors tie: the smallest key wins, which here is the largest id
    assert [i for i in IDENTICAL if i in kept(table)] == [max(IDENTICAL)]
    # the policy matters: hard and easy keep different members of the near-copy groups
    far = {min(m, key=lambda i: (-distance[i], keys[i])) for m in NOISE}
    near = {min(m, key=lambda i: (distance[i], keys[i])) for m in NOISE}
    assert far != near and (far if policy == "hard" else near) <= kept(table)
    assert table.column_names[-2:] == ["cluster", "centroid_distance"]


def test_largest_keeps_most_pixels_then_smallest_key(pool):
    root, _, keys, pixels = pool
    table, summary = groups_of(root, keep="largest")
    assert summary.record["keep"] == {"policy": "largest"}
    assert "cluster" not in table.column_names  # the groups.parquet columns of before
    assert kept(table) == brute_keepers(table.column("component").to_numpy(), pixels.astype(float), keys)


def test_random_is_seeded_a_member_of_each_component_and_independent_of_row_order(pool):
    root, _, keys, _ = pool
    first, summary = groups_of(root, keep="random", seed=3)
    again, _ = groups_of(root, keep="random", seed=3)
    other, _ = groups_of(root, keep="random", seed=4)
    component = first.column("component").to_numpy()
    assert summary.record["keep"] == {"policy": "random", "seed": 3}
    assert kept(first) == kept(again)  # same seed, same choice
    assert np.bincount(component[sorted(kept(first))]).tolist() == [1] * (component.max() + 1)
    assert kept(first) != kept(other)  # another seed, another choice somewhere
    salt = (3).to_bytes(8, "little", signed=True)
    scores = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, salt=salt).digest(), "little") >> 1
              for k in keys]
    assert random_scores(keys, 3).tolist() == scores
    assert random_scores(keys[::-1], 3).tolist() == scores[::-1]  # a function of the key, not of the row
    assert kept(first) == brute_keepers(component, np.asarray(scores, float), keys)


def test_hard_without_any_group_runs_no_kmeans_and_keeps_everything(tmp_path):
    x = unit(np.random.default_rng(1).normal(size=(20, 8))).astype(np.float32)
    write_feature_root(tmp_path, x)
    table, summary = groups_of(tmp_path, threshold=0.999, keep="hard")
    assert summary.record["keep"]["clusters"] == 0 and summary.record["keep"]["clustered_rows"] == 0
    assert table.column("keep").to_pylist() == [True] * 20 and table.column("cluster").null_count == 20


def test_hard_on_random_weights_or_without_embedding_is_a_clear_error(tmp_path):
    x = unit(np.random.default_rng(1).normal(size=(20, 8))).astype(np.float32)
    write_feature_root(tmp_path, x, provenance={"model": "m", "weights": {"source": "random", "sha256": "random"},
                                                  "input_size": [3, 56, 56]})
    with pytest.raises(ConfigError, match="random weights.*--keep largest or random"):
        run_dedup(DedupConfig(features=str(tmp_path), keep="hard", progress=False))
    with pytest.raises(ConfigError, match="--no-embedding"):
        DedupConfig(features="f", keep="easy", embedding=False)
    with pytest.raises(ConfigError, match="keep must be one of quality, largest, hard, easy, random"):
        DedupConfig(features="f", keep="newest")
    with pytest.raises(ConfigError, match="--against"):
        DedupConfig(features="f", keep="random", against="old")
    with pytest.raises(ConfigError, match="clusters must be >= 1"):
        DedupConfig(features="f", clusters=0)


# ------------------------------------------------------------------------------------------------- sweep
def test_sweep_counts_equal_separate_runs_and_write_only_sweep_parquet(tmp_path):
    x, keys, _ = planted_pool(tmp_path)
    out = tmp_path / "dedup"
    record = run_dedup(DedupConfig(features=str(tmp_path), k=8, sweep=SWEEP, progress=False))
    assert sorted(p.name for p in out.iterdir()) == ["index", "knn", "sweep.parquet"]  # a dry run
    table = pq.read_table(out / "sweep.parquet")
    assert table.schema.remove_metadata() == SWEEP_SCHEMA
    assert table.column_names == ["threshold", "removed", "share", "groups", "largest_group"]
    assert table.to_pylist() == record.record["sweep"]
    assert table.column("threshold").to_pylist() == list(SWEEP)
    assert record.record["stages"]["embedding"]["threshold"] == min(SWEEP) and record.record["dry_run"]
    assert (record.record["images"], record.record["k"]) == (N, 8)
    meta = pq.read_schema(out / "sweep.parquet").metadata[b"dinocurate.sweep"]
    assert b'"dry_run": true' in meta and b'"k": 8' in meta
    removed = []
    for row in record.record["sweep"]:
        summary = run_dedup(DedupConfig(features=str(tmp_path), k=8, threshold=row["threshold"], progress=False))
        assert (row["removed"], row["groups"], row["largest_group"]) == \
            (summary.record["removed"], summary.record["groups"], summary.record["largest_component"]), row["threshold"]
        assert row["share"] == summary.record["removed"] / N
        removed.append(row["removed"])
    assert removed == sorted(removed) and removed[0] >= 3 and removed[-1] > removed[0]  # looser removes more
    # the sweep's embedding edges at each threshold are the separate run's, pair for pair
    src, dst = rescored_edges(out / "knn", x, min(SWEEP))
    sims = pair_cosines(x, src, dst)
    for t in SWEEP:
        i, j = rescored_edges(out / "knn", x, t)
        assert set(zip(i.tolist(), j.tolist())) == set(zip(src[sims > t].tolist(), dst[sims > t].tolist()))
    # a later sweep leaves a real run's outputs as they were
    before = (out / "groups.parquet").read_bytes(), (out / "summary.json").read_bytes()
    run_dedup(DedupConfig(features=str(tmp_path), k=8, sweep=(0.9,), progress=False))
    assert ((out / "groups.parquet").read_bytes(), (out / "summary.json").read_bytes()) == before
    assert pq.read_table(out / "sweep.parquet").column("threshold").to_pylist() == [0.9]


def test_sweep_table_text():
    rows = [{"threshold": 0.95, "removed": 12, "share": 0.05, "groups": 10, "largest_group": 3},
            {"threshold": 0.9, "removed": 1234, "share": 0.5, "groups": 1000, "largest_group": 40}]
    assert format_sweep(rows).splitlines() == [
        "threshold    removed    share    groups  largest group",
        "     0.95         12    5.00%        10              3",
        "      0.9       1234   50.00%      1000             40",
    ]


@pytest.mark.parametrize("text,message", [
    ("0.9,abc", "'abc' is not a number"), ("", "at least one threshold"), (" , ", "at least one threshold"),
    ("0.9,1.5", r"in \(0, 1\]; got 1.5"), ("0", r"in \(0, 1\]; got 0.0"), ("-0.2", "got -0.2"),
])
def test_bad_sweep_strings_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(text)


def test_sweep_and_threshold_ranges_and_combinations():
    assert parse_sweep(" 0.85,0.95,0.9,0.95 ,1") == (1.0, 0.95, 0.9, 0.85)  # distinct, strictest first
    for bad in (0, 1.01, -0.5):
        with pytest.raises(ConfigError, match=r"threshold is a cosine similarity in \(0, 1\]"):
            DedupConfig(features="f", threshold=bad)
    with pytest.raises(ConfigError, match=r"--sweep thresholds .* \(0, 1\]; got 2"):
        DedupConfig(features="f", sweep=(0.9, 2))
    with pytest.raises(ConfigError, match="without --against/--reference"):
        DedupConfig(features="f", sweep=(0.9,), reference="ref")


def test_sweep_with_the_embedding_stage_off_is_a_clear_error(tmp_path):
    x = unit(np.random.default_rng(2).normal(size=(20, 8))).astype(np.float32)
    write_feature_root(tmp_path, x, provenance={"model": "m", "weights": {"source": "random", "sha256": "random"},
                                                "input_size": [3, 56, 56]})
    with pytest.raises(ConfigError, match="random weights .* pass --embedding"):
        run_dedup(DedupConfig(features=str(tmp_path), sweep=(0.9,), progress=False))
    assert not (tmp_path / "dedup" / "sweep.parquet").exists()
    forced = run_dedup(DedupConfig(features=str(tmp_path), sweep=(0.9,), embedding=True, progress=False))
    assert forced.record["sweep"][0]["threshold"] == 0.9
    with pytest.raises(ConfigError, match="--no-embedding turns off"):
        DedupConfig(features="f", embedding=False, sweep=(0.9,))


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_sweep_prints_the_table_and_keep_reaches_the_config(tmp_path, capsys):
    root = tmp_path / "pool"
    planted_pool(root)
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--k", "8", "--sweep", "0.9,0.95", "--no-progress"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"dedup sweep (dry run): {N} images, k = 8 neighbours each, exact and pHash edges at every " \
                       "threshold"
    assert lines[1].split() == ["threshold", "removed", "share", "groups", "largest", "group"]
    assert [line.split()[0] for line in lines[2:4]] == ["0.95", "0.9"]
    assert not (root / "dedup" / "groups.parquet").exists()
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--k", "8", "--sweep", "0.9,x"])
    assert exit_.value.code == 2 and "'x' is not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--keep", "oldest"])
    assert exit_.value.code == 2 and "invalid choice: 'oldest'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--keep", "hard", "--no-embedding"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --keep hard ranks images by their embedding (distance to their k-means centroid), which "
        "--no-embedding turns off: drop --no-embedding, or use --keep largest or random"]
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--k", "8", "--threshold", "0.85", "--keep", "easy",
                        "--clusters", "4", "--no-progress"])
    assert exit_.value.code == 0 and pq.read_table(root / "dedup" / "groups.parquet").column_names[-1] == \
        "centroid_distance"
    assert "  kept per group: easy over 4 k-means clusters (seed 0)" in capsys.readouterr().out.splitlines()
