"""Curation at scale: wall time and peak memory of sample- and cluster-based retrieval, 10k seeds in a 1M pool.

    .venv/bin/python benchmarks/curate_scale.py --pool bench_out/dedup_scale --queries 10000

The pool is any extract output root (benchmarks/dedup_scale.py makes a 1M × 384 one). Seeds are pool vectors
perturbed to cosine ≈ 0.9, written as their own feature root with the pool's provenance. Each mode runs
`run_curate` into its own folder; the pool index (auto choice) is built by the first sample-based run and
its time is reported inside that run. Quality: the fraction of the pool images the seeds were made from that
each mode selects (sample-based with the default k must find them all).

    .venv/bin/python benchmarks/curate_scale.py --pool /tmp/tiny_pool --queries 50 --clusters 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def seed_sources(count: int, n: int, seed: int) -> np.ndarray:
    """The pool ids the seeds are made from (the first draw of write_seeds' generator)."""
    return np.sort(np.random.default_rng(seed).choice(count, n, replace=False))


def write_seeds(pool: Path, out: Path, n: int, seed: int) -> Path:
    """Seeds as their own feature root (reused while pool, n and seed are the same)."""
    import pyarrow.parquet as pq

    from pipeline.io.files import read_json, write_json_atomic, write_parquet_atomic
    from pipeline.io.schema import META_FIELDS, feature_schema, feature_table
    from pipeline.roots.features import open_features, read_matrix

    fs = open_features(pool)
    made = {"pool": str(pool.resolve()), "pool_fingerprint": fs.provenance.get("fingerprint"), "n": n, "seed": seed}
    if (out / "seeds.json").exists() and read_json(out / "seeds.json") == made:
        return out
    rng = np.random.default_rng(seed)
    vectors = read_matrix(fs, "cls", dtype=np.float16)
    ids = np.sort(rng.choice(fs.count, n, replace=False))
    assert np.array_equal(ids, seed_sources(fs.count, n, seed))
    x = vectors[ids].astype(np.float32)
    x += 0.45 * rng.normal(size=x.shape).astype(np.float32) / np.sqrt(x.shape[1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    schema = pq.read_schema(fs.files[0])
    widths = {f.name: f.type.list_size for f in schema if hasattr(f.type, "list_size") and f.name != "sha1"}
    prov = fs.provenance
    rows = {"key": [f"seed{i:06d}" for i in range(n)], "shard": ["seeds"] * n, "index": list(range(n)),
            "width": [1] * n, "height": [1] * n, "sha1": [bytes(20)] * n}
    for name in META_FIELDS:  # the pHash columns, and any metadata column added later
        rows.setdefault(name, [0] * n)
    feats = {name: (x if name == "cls" else x) for name in widths}
    dtype = "float16" if schema.field("cls").type.value_type.bit_width == 16 else "float32"
    write_parquet_atomic(feature_table(feature_schema(prov, widths, dtype), rows, feats),
                         out / "features" / "seeds.parquet")
    write_json_atomic(made, out / "seeds.json")
    return out


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="bench_out/dedup_scale")
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--out", default="bench_out/curate_scale")
    p.add_argument("--clusters", type=int, default=None, help="cluster mode k-means clusters (default N/500)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import pyarrow.parquet as pq

    from pipeline.curate.retrieval import CurateConfig, run_curate
    from pipeline.roots.features import open_features

    out = Path(args.out)
    seeds = write_seeds(Path(args.pool), out / "seeds", args.queries, args.seed)
    sources = seed_sources(open_features(args.pool).count, args.queries, args.seed)
    results = {}
    for mode in ("sample", "cluster"):
        t0 = time.perf_counter()
        summary = run_curate(CurateConfig(pool=args.pool, queries=(("seeds", str(seeds)),), mode=mode,
                                          out=str(out / mode), clusters=args.clusters, progress=False)).record
        selected = pq.read_table(out / mode / "selected.parquet", columns=["id"]).column("id").to_numpy()
        results[mode] = {"seconds": round(time.perf_counter() - t0, 1), "selected": summary["selected"],
                         "seed_sources_selected": round(float(np.isin(sources, selected).mean()), 4),
                         "peak_rss_gib_so_far": round(peak_gib(), 2), "source": summary["sources"]["seeds"]}
        print(f"{mode:>8}: {results[mode]['seconds']:.1f} s, {summary['selected']} selected "
              f"({results[mode]['seed_sources_selected']:.1%} of the seeds' source images), "
              f"peak RSS so far {results[mode]['peak_rss_gib_so_far']:.2f} GiB", flush=True)
    (out / "curate_scale.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"-> {out}/curate_scale.json")


if __name__ == "__main__":
    main()
