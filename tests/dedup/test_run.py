"""run_dedup (pipeline/dedup/run.py): planted groups and a chain, keepers, copies, decontamination, summary."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.errors import ConfigError
from pipeline.extract.runner import run_extract
from tests.conftest import tiny_config, write_feature_root


def planted(seed: int = 0, n: int = 400, d: int = 128):
    """Random unit vectors plus planted groups; group C is a chain a~b~c with cos(a, c) < threshold."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = {"A": [10, 11, 12, 13], "B": [50, 51], "D": [300, 301, 302]}
    for members in groups.values():
        base = x[members[0]]
        for m in members[1:]:
            v = base + 0.25 * rng.normal(size=d) / np.sqrt(d)
            x[m] = v / np.linalg.norm(v)
    # chain: a=100, b=101, c=102 with cos(a,b)≈cos(b,c)≈0.8 and cos(a,c)≈0.3
    e = np.linalg.qr(rng.normal(size=(d, 3)))[0].T
    a = e[0]
    b = 0.8 * e[0] + 0.6 * e[1]
    c = 0.3 * e[0] + 0.8 * e[1] + np.sqrt(1 - 0.09 - 0.64) * e[2]
    x[100], x[101], x[102] = a, b, c
    groups["C"] = [100, 101, 102]
    return x.astype(np.float32), groups


def expected_components(n: int, groups: dict) -> set[frozenset]:
    grouped = {m for g in groups.values() for m in g}
    return {frozenset(g) for g in groups.values()} | {frozenset([i]) for i in range(n) if i not in grouped}


def found_components(df: pd.DataFrame) -> set[frozenset]:
    return {frozenset(g.id) for _, g in df.groupby("component")}


def test_planted_groups_and_chain_become_components_with_one_keeper(tmp_path):
    x, groups = planted()
    assert x[100] @ x[102] < 0.6 < min(x[100] @ x[101], x[101] @ x[102])
    pixels = np.full(len(x), 100)
    pixels[12] = 500  # the keeper of A: most pixels
    keys = write_feature_root(tmp_path, x, pixels=pixels)
    summary = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    df = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    assert list(df.columns) == ["key", "shard", "index", "id", "component", "component_size", "keep",
                                "nearest_key", "nearest_similarity", "reason", "keep_reason"]
    assert found_components(df) == expected_components(len(x), groups)
    kept = df.groupby("component").keep.sum()
    assert (kept == 1).all()
    by_id = df.set_index("id")
    assert by_id.loc[12, "keep"] and not by_id.loc[10, "keep"]
    assert by_id.loc[50, "keep"] and not by_id.loc[51, "keep"]  # tie on pixels: smallest key
    # no image to read (features written in code): ranked by the extracted size, then the path
    assert by_id.loc[12, "keep_reason"].endswith("most pixels (500 px against 100 px)")
    assert by_id.loc[50, "keep_reason"].endswith("first by name")
    assert by_id.loc[~by_id.keep | (by_id.component_size == 1), "keep_reason"].isna().all()
    assert set(by_id.loc[[10, 11, 13], "reason"]) == {"embedding"} and by_id.loc[12, "reason"] == "keep"
    assert by_id.loc[0, "reason"] == "unique" and pd.isna(by_id.loc[0, "nearest_key"])
    assert by_id.loc[102, "nearest_key"] == keys[101]
    np.testing.assert_allclose(by_id.loc[102, "nearest_similarity"], x[101] @ x[102], atol=1e-3)
    assert summary.record["groups"] == 4 and summary.record["removed"] == 3 + 1 + 2 + 2
    assert summary.record["component_sizes"] == {"1": len(x) - 12, "2": 1, "3": 2, "4": 1}
    assert summary.record["reasons"]["embedding"] == 8 and "warning" not in summary.record
    again = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    df2 = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    pd.testing.assert_frame_equal(df, df2)
    assert again.record["groups"] == summary.record["groups"]


def test_approximate_candidates_are_rechecked_before_grouping(tmp_path):
    x, groups = planted(seed=1, n=3000)
    write_feature_root(tmp_path, x, per_shard=1000)
    from pipeline.index.build import IndexConfig, build_index

    build_index(IndexConfig(features=str(tmp_path), out=str(tmp_path / "dedup" / "index"),
                            factory="IVF16,PQ16x4fs", progress=False, nprobe=16))
    summary = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    df = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    assert summary.record["stages"]["embedding"]["index"] == "IVF16,PQ16x4fs"
    assert summary.record["stages"]["embedding"]["candidates"] == 3000 * 64
    # PQ similarities are approximate; grouping uses the exact cosine, so the chain's a–c is never an edge
    assert found_components(df) == expected_components(len(x), groups)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_exact_and_phash_edges_group_copies_made_from_one_image(tmp_path):
    """Byte-identical and re-encoded/resized/mirrored copies of one photo-like image, among distinct ones."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((320, 240),
                                                                                      Image.Resampling.BICUBIC)
    root = tmp_path / "photos"
    root.mkdir()
    original = _jpeg(photo, 95)
    (root / "orig.jpg").write_bytes(original)
    (root / "orig_copy.jpg").write_bytes(original)
    (root / "requality.jpg").write_bytes(_jpeg(photo, 60))
    (root / "smaller.jpg").write_bytes(_jpeg(photo.resize((160, 120)), 90))
    (root / "mirror.jpg").write_bytes(_jpeg(ImageOps.mirror(photo), 90))
    for i in range(6):
        other = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((320, 240))
        (root / f"other{i}.jpg").write_bytes(_jpeg(other, 90))
    run_extract(tiny_config(tmp_path / "out", images=str(root)))
    summary = run_dedup(DedupConfig(features=str(tmp_path / "out"), progress=False))
    df = pd.read_parquet(tmp_path / "out" / "dedup" / "groups.parquet").set_index("key")
    group = {"orig.jpg", "orig_copy.jpg", "requality.jpg", "smaller.jpg", "mirror.jpg"}
    assert {k for k in df.index if df.loc[k, "component_size"] > 1} == group
    assert df.loc[sorted(group), "component"].nunique() == 1
    assert df.loc["orig_copy.jpg", "reason"] in ("exact", "keep") and df.loc["orig.jpg", "reason"] in ("exact",
                                                                                                       "keep")
    assert {df.loc[k, "reason"] for k in ("requality.jpg", "smaller.jpg", "mirror.jpg")} <= {"phash", "keep"}
    assert summary.record["stages"]["embedding"]["skipped"] == "random weights"
    assert summary.record["stages"]["exact"]["edges"] == 1 and summary.record["stages"]["phash"]["mirror_aware"]


def test_decontamination_drops_every_touched_component_and_nothing_else(tmp_path):
    x, groups = planted(seed=2)
    write_feature_root(tmp_path / "pool", x)
    rng = np.random.default_rng(9)
    near_a = x[11] + 0.5 * rng.normal(size=x.shape[1]) / np.sqrt(x.shape[1])  # cos ≈ 0.9 with A's member 11
    near_single = x[200] * 0.5 + 0.87 * np.linalg.qr(np.stack([x[200], rng.normal(size=x.shape[1])]).T)[0][:, 1]
    far = rng.normal(size=(5, x.shape[1]))
    ref = np.vstack([near_a, near_single, far])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert ref[1] @ x[200] > 0.45 and (ref[2:] @ x.T).max() < 0.45
    sha_ref = [hashlib.sha1(f"ref{i}".encode()).digest() for i in range(len(ref))]
    sha_ref[-1] = hashlib.sha1(b"img000300").digest()  # byte-identical to pool item 300 (group D)
    # the reference's pHashes must not repeat the pool's (write_feature_root draws both from one seed)
    ref_phash = np.random.default_rng(77).integers(0, 2**63, len(ref), dtype=np.uint64) * 2
    write_feature_root(tmp_path / "ref", ref.astype(np.float32), keys=[f"ref{i}" for i in range(len(ref))],
                       sha1=sha_ref, phash=ref_phash)
    summary = run_dedup(DedupConfig(features=str(tmp_path / "pool"), reference=str(tmp_path / "ref"),
                                    progress=False))
    df = pd.read_parquet(tmp_path / "pool" / "dedup" / "groups.parquet").set_index("id")
    dropped = set(df.index[df.reason == "contaminated"])
    assert dropped == set(groups["A"]) | {200} | set(groups["D"])
    assert not df.loc[sorted(dropped), "keep"].any()
    assert summary.record["contaminated_removed"] == len(dropped)
    assert summary.record["duplicates_removed"] == (2 - 1) + (3 - 1)  # B and C, the untouched groups
    assert df.keep.sum() == len(x) - len(dropped) - 3


def test_reference_of_another_model_is_refused(tmp_path):
    from pipeline.errors import MixedProvenanceError

    x, _ = planted()
    write_feature_root(tmp_path / "pool", x)
    other = {"model": "other", "weights": {"source": "random", "sha256": "random"}, "input_size": [3, 56, 56],
             "resize_mode": "fixed"}
    write_feature_root(tmp_path / "ref", x[:5], provenance=other)
    with pytest.raises(MixedProvenanceError):
        run_dedup(DedupConfig(features=str(tmp_path / "pool"), reference=str(tmp_path / "ref"), progress=False))


def test_low_threshold_warns_about_a_giant_component(tmp_path):
    x, _ = planted(n=400, d=4)  # in 4 dimensions, cosine > 0.1 links nearly everything
    write_feature_root(tmp_path, x)
    summary = run_dedup(DedupConfig(features=str(tmp_path), threshold=0.1, large_component=50, progress=False))
    assert summary.record["largest_component"] > 300 and "threshold" in summary.record["warning"]
    saved = json.loads((tmp_path / "dedup" / "summary.json").read_text())
    assert saved["warning"] == summary.record["warning"]


def groups_of(sizes: list[int], n: int, d: int = 128, seed: int = 7) -> np.ndarray:
    """n unit vectors: groups of the given sizes (near-copies of one direction each), the rest unrelated."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    start = 0
    for size in sizes:
        x[start:start + size] = x[start] + 0.05 * rng.normal(size=(size, d))
        start += size
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force_largest(x: np.ndarray, threshold: float) -> int:
    """The largest connected component of the graph `cosine > threshold`, all pairs, by union-find."""
    parent = list(range(len(x)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(x @ x.T, 1) > threshold)):
        parent[find(int(i))] = find(int(j))
    return int(np.bincount([find(i) for i in range(len(x))]).max())


@pytest.mark.parametrize("largest, warned", [(21, True), (20, False)])
def test_a_component_over_5_percent_of_the_pool_is_warned_about_with_its_size(tmp_path, largest, warned):
    """400 images: the limit is min(5 % = 20, 1,000) = 20; a component of 21 is warned about, one of 20 is not
    (issue 25: below a fixed 1,000, components of hundreds went unremarked)."""
    x = groups_of([largest, 20 if warned else 19, 3, 2], 400)
    write_feature_root(tmp_path, x)
    summary = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    assert summary.record["largest_component"] == brute_force_largest(x, 0.6) == largest
    assert ("warning" in summary.record) == warned
    if warned:
        assert summary.record["warning"].startswith(
            f"one component holds {largest} of 400 images (5%; a component over 20")


def test_the_large_component_limit_share_cap_and_floor():
    cfg = DedupConfig(features="x")
    assert cfg.large_component_limit(100_000) == 1000  # 5 % would be 5,000: the cap
    assert cfg.large_component_limit(400) == 20
    assert cfg.large_component_limit(20) == 10  # a tiny pool: a group of 3 (15 %) is no chain
    assert DedupConfig(features="x", large_component=50, large_component_share=1).large_component_limit(400) == 50
    with pytest.raises(ConfigError, match="never suspect"):
        DedupConfig(features="x", large_component_min=1)
    with pytest.raises(ConfigError, match="share of the pool"):
        DedupConfig(features="x", large_component_share=0)


def test_a_tiny_pool_does_not_warn_about_a_group_of_three(tmp_path):
    x = groups_of([3, 2], 20)
    write_feature_root(tmp_path, x)
    summary = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    assert summary.record["largest_component"] == 3 and "warning" not in summary.record


def test_phash_on_knn_candidates_matches_all_pairs_for_planted_copies(tmp_path):
    """Past `phash_exhaustive_max`, pHash pairs come from the k-NN graph: planted copies (close in both
    embedding and hash) are found the same way as by the exhaustive search."""
    x, groups = planted(seed=4)
    rng = np.random.default_rng(4)
    phash = rng.integers(0, 2**63, len(x), dtype=np.uint64) * 2 + 1
    for members in groups.values():
        for m in members[1:]:
            phash[m] = phash[members[0]] ^ np.uint64(0b1011)  # 3 bits away from the group's first
    write_feature_root(tmp_path, x, phash=phash)
    base = dict(features=str(tmp_path), embedding=False, progress=False)
    full = run_dedup(DedupConfig(**base))
    df_full = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    knn = run_dedup(DedupConfig(**base, phash_exhaustive_max=10))
    df_knn = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    assert full.record["stages"]["phash"]["compared"] == "all pairs"
    assert knn.record["stages"]["phash"]["compared"].startswith("the 64 nearest")
    assert found_components(df_full) == found_components(df_knn)
    # every planted group member sits 3 bits from its group's first member: the same edges both ways
    assert full.record["stages"]["phash"]["edges"] == knn.record["stages"]["phash"]["edges"] > 0


def test_dedup_reuses_a_graph_built_in_parallel_by_make_knn(tmp_path):
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.index.knn import build_graph_parallel

    x, groups = planted(seed=5)
    write_feature_root(tmp_path, x, per_shard=100)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    build_graph_parallel(str(tmp_path), str(tmp_path / "index"), tmp_path / "knn", k=64, workers=2, part_rows=100)
    summary = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    assert not (tmp_path / "dedup" / "knn").exists()  # the parallel graph was used, none rebuilt
    assert summary.record["stages"]["embedding"]["index"] == "Flat"
    df = pd.read_parquet(tmp_path / "dedup" / "groups.parquet")
    assert found_components(df) == expected_components(len(x), groups)
