"""Duplicate edges (pipeline/dedup/edges.py): pHash pairs against brute force, the graph's index choice."""

from __future__ import annotations

import numpy as np

from pipeline.dedup.edges import dedup_factory, phash_edges, rescore_block_rows, rescored_edges
from pipeline.index.build import IndexConfig, build_index, load_index
from pipeline.index.knn import build_graph
from pipeline.io.phash import hamming64
from pipeline.roots.features import open_features
from tests.conftest import clustered_vectors, write_feature_root


def test_phash_edges_against_brute_force():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**63, 30, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(int(b)) for b in rng.integers(0, 64, 60)]
    hashes = np.concatenate([base, base[:20] ^ np.array(flips[:20]) ^ np.array(flips[20:40])])
    i, j = phash_edges(hashes, 6)
    got = set(zip(i.tolist(), j.tolist()))
    want = {(a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes))
            if hamming64(int(hashes[a]), int(hashes[b])) <= 6}
    assert got == want and len(want) >= 20


def test_dedup_index_choice():
    assert dedup_factory(50_000, 384) == "Flat"
    assert dedup_factory(1_000_000, 384) == "IVF4000,PQ48x4fs"
    assert dedup_factory(1_000_000, 768) == "IVF4000,PQ96x4fs"
    # every vector is added and searched: the brute-force coarse quantizer stays at 4,096 lists past 1M
    assert dedup_factory(10_000_000, 384) == "IVF4096,PQ48x4fs"


def test_rescoring_in_blocks_equals_one_block_and_brute_force(tmp_path):
    """The exact re-scoring holds one float32 block of rows at a time: any block size gives the same edges,
    the graph candidates whose float32 cosine (of the float16 vectors) exceeds the threshold."""
    x = clustered_vectors(1500, 24, 12, spread=0.35, seed=4).astype(np.float16)
    write_feature_root(tmp_path, x.astype(np.float32), per_shard=400)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    graph = build_graph(open_features(tmp_path), load_index(tmp_path).index, "cls", tmp_path / "knn", k=6,
                        part_rows=500, progress=False)
    t = 0.8
    whole = rescored_edges(graph, x, t, block_rows=10**6)
    got = {frozenset(set(zip(*map(np.ndarray.tolist, rescored_edges(graph, x, t, block_rows=b))))) for b in
           (100, 333, 1499)}
    assert got == {frozenset(zip(whole[0].tolist(), whole[1].tolist()))}
    x32 = x.astype(np.float32)
    sims = x32 @ x32.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    want = {(i, int(j)) for i in range(len(x)) for j in top[i] if j != i and sims[i, j] > t}
    assert len(want) > 100 and len(set(zip(whole[0].tolist(), whole[1].tolist())) ^ want) <= len(want) // 100
    # the block is what --memory-budget leaves beside what the job holds, at least 65,536 rows
    assert rescore_block_rows(384, 4.0) == 4 * 2**30 // (4 * 384)
    assert rescore_block_rows(384, 4.0, 2**30) == 3 * 2**30 // (4 * 384)
    assert rescore_block_rows(384, 0.01) == 65536 and rescore_block_rows(384, 4.0, 5 * 2**30) == 65536


def test_dedup_reads_the_vectors_from_the_files_when_they_exceed_the_budget(tmp_path):
    """Past --memory-budget the vectors are read as needed (roots/rows.py): the same float16 values, the same
    groups, row for row, as when they are held."""
    import pyarrow.parquet as pq

    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.edges import dedup_vectors, holds_vectors
    from pipeline.dedup.run import run_dedup
    from pipeline.roots.features import read_matrix
    from pipeline.roots.rows import StreamedRows

    rng = np.random.default_rng(3)
    x = clustered_vectors(900, 32, 30, spread=0.4, seed=6)
    copies = rng.choice(900, 60, replace=False)
    x = np.concatenate([x, x[copies] + 0.02 * rng.standard_normal((60, 32)).astype(np.float32)])
    write_feature_root(tmp_path, x / np.linalg.norm(x, axis=1, keepdims=True), per_shard=200, dtype="float16")
    fs = open_features(tmp_path)
    tiny = DedupConfig(features=str(tmp_path), out=str(tmp_path / "streamed"), memory_budget_gb=1e-5, progress=False)
    streamed = dedup_vectors(fs, tiny)
    assert isinstance(streamed, StreamedRows) and not holds_vectors(960, 32, 1e-5) and holds_vectors(960, 32, 1.0)
    held = read_matrix(fs, "cls", dtype=np.float16)
    ids = rng.integers(0, 960, 300)
    assert np.array_equal(streamed[ids], held[ids]) and np.array_equal(streamed[150:700], held[150:700])
    a = run_dedup(DedupConfig(features=str(tmp_path), progress=False))
    b = run_dedup(tiny)
    assert a.record["removed"] >= 50 and (a.record["removed"], a.record["groups"]) == (b.record["removed"],
                                                                                      b.record["groups"])
    assert pq.read_table(a.groups_path).equals(pq.read_table(b.groups_path))
    blocks = [r.record["stages"]["embedding"]["rescore_block_rows"] for r in (a, b)]
    assert blocks[1] == 65536 and blocks[0] == (4 * 2**30 - 960 * 32 * 2 - fs_records(tmp_path)) // (4 * 32)


def fs_records(root) -> int:
    """What dedup holds per row besides the vectors, as run_dedup counts it: the metadata and the pHashes."""
    from pipeline.roots.features import read_meta

    meta = read_meta(open_features(root), ("key", "shard", "index", "width", "height", "sha1", "phash"), absent="null")
    return meta.nbytes + 8 * meta.num_rows


def test_exact_edges_link_each_copy_to_the_first_of_its_sha1_and_never_a_missing_one():
    """Arrow groups the sha1s (no Python object per row): the same star edges as a first-seen dict, chunked or
    not; a row without a sha1 is no evidence of anything and links to nothing."""
    import pyarrow as pa

    from pipeline.dedup.edges import exact_edges

    rng = np.random.default_rng(11)
    pool = [bytes(rng.integers(0, 256, 20, dtype=np.uint8)) for _ in range(40)]
    sha1 = [pool[i] if i < 40 else None for i in rng.integers(0, 46, 500)]
    first, want = {}, set()
    for row, h in enumerate(sha1):
        if h is None:
            continue
        head = first.setdefault(h, row)
        if head != row:
            want.add((head, row))
    assert len(want) > 300 and sum(h is None for h in sha1) > 10
    for given in (sha1, pa.array(sha1, pa.binary()), pa.chunked_array([sha1[:123], sha1[123:]], pa.binary())):
        i, j = exact_edges(given)
        assert i.dtype == np.int64 and set(zip(i.tolist(), j.tolist())) == want and len(i) == len(want)
    assert [len(a) for a in exact_edges([])] == [0, 0] and [len(a) for a in exact_edges([None, None])] == [0, 0]


def test_memory_budget_bounds_records_vectors_and_the_block_together():
    """--memory-budget covers what dedup holds past its imports: the per-row records, the vectors when they are
    held (else one feature file's) and one float32 re-scoring block; the block takes what is left."""
    from pipeline.dedup.edges import STREAM_VALUE_BYTES, holds_vectors, memory_split

    gib, n, d = 2**30, 10_000_000, 384
    records = n * 88
    assert not holds_vectors(n, d, 4.0, records) and holds_vectors(n, d, 12.0, records)
    held, block = memory_split(n, d, 4.0, records, 100_000)
    assert not held and block == (4 * gib - records - 100_000 * d * STREAM_VALUE_BYTES) // (4 * d)
    held, block = memory_split(n, d, 12.0, records, 100_000)
    assert held and block == (12 * gib - records - n * d * 2) // (4 * d)
    # vectors that fit alone but not beside the records and the smallest block are read from the files
    assert not holds_vectors(1000, 8, (1000 * 8 * 2 + 1000 * 8 * 4) / gib, 1.0)
    assert holds_vectors(1000, 8, (1000 * 8 * 2 + 1000 * 8 * 4 + 1) / gib, 1.0)
    assert memory_split(1000, 8, 1e-9, 0, 10, npy=True) == (True, 65536)  # a .npy is held; the block's floor
