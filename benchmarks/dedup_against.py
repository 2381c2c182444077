"""Growing collections: new images checked against a processed collection (`dedup --against`) vs a full rerun.

    .venv/bin/python benchmarks/dedup_against.py --old 100000 --new 10000 --dim 384

1. Generates, with dedup_scale.py's generator (seeded clustered unit vectors, `--dup-fraction` of the rows
   planted as noisy copies of an earlier row, cosine 0.85-0.95), one root of old + new rows in shards of
   `--new` rows: the last shard is the new images, the others the collection (two more roots of hard links to
   the same Parquet files).
2. Times, in this process: the collection's own dedup (once; it builds the index that `--against` reuses),
   `run_dedup(against=collection)` on the new shard, and a full dedup of old + new from scratch (its own
   index and graph), which is what a user without `--against` would rerun.
3. Checks: every planted copy in the new shard of an old row is a duplicate of that row (recall); every planted
   copy of a new row is in one group with its source (one of them kept: the one with more pixels); agreement
   with the full run on which new rows are in a group.
4. Prints the figures and writes OUT/dedup_against.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import dedup_scale  # noqa: E402 - the generator lives there


def link_root(src: Path, dst: Path, shards: list[Path]) -> None:
    """A feature root of hard links to some of `src`'s shards (no bytes copied)."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "features").mkdir(parents=True)
    for f in shards:
        os.link(f, dst / "features" / f.name)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=int, default=100_000, help="images in the collection (a multiple of --new)")
    ap.add_argument("--new", type=int, default=10_000, help="new images")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1024)
    ap.add_argument("--spread", type=float, default=1.5)
    ap.add_argument("--dup-fraction", type=float, default=0.01)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_out/dedup_against")
    args = ap.parse_args()
    if args.old % args.new or args.old < args.new:
        ap.error("--old must be a multiple of --new")
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup

    out = Path(args.out)
    n = args.old + args.new
    params = {"n": n, "dim": args.dim, "seed": args.seed, "shards": n // args.new, "clusters": args.clusters,
              "spread": args.spread, "dup_fraction": args.dup_fraction, "dup_cos": [0.85, 0.95], "version": 2}
    everything = out / "all"
    generated = dedup_scale.ensure_features(everything, params, regen=False)
    files = sorted((everything / "features").glob("*.parquet"))
    link_root(everything, out / "old", files[:-1])
    link_root(everything, out / "new", files[-1:])
    for root in (everything, out / "new"):
        shutil.rmtree(root / "dedup", ignore_errors=True)

    dedup = dict(threshold=args.threshold, progress=False)
    _, old_s = timed(run_dedup, DedupConfig(features=str(out / "old"), **dedup))
    against, against_s = timed(run_dedup, DedupConfig(features=str(out / "new"), against=str(out / "old"), **dedup))
    full, full_s = timed(run_dedup, DedupConfig(features=str(everything), **dedup))

    import pyarrow.parquet as pq

    rows = pq.read_table(out / "new" / "dedup" / "against.parquet").to_pylist()
    plan = dedup_scale.layout(n, args.seed, args.dup_fraction)
    first_new = args.old
    expected_old = {i: int(plan["source"][i]) for i in range(first_new, n) if 0 <= plan["source"][i] < first_new}
    expected_new = {i: int(plan["source"][i]) for i in range(first_new, n) if plan["source"][i] >= first_new}
    by_key = {r["key"]: r for r in rows}

    def kept_for(i: int) -> str:  # the new image kept for row i's group (itself when kept)
        row = by_key[f"img{i:08d}"]
        return row["key"] if row["keep"] else row["duplicate_of"]

    found_old = sum(by_key[f"img{i:08d}"]["duplicate_of"] == f"img{s:08d}" for i, s in expected_old.items())
    found_new = sum(kept_for(i) == kept_for(s) and not (by_key[f"img{i:08d}"]["keep"] and by_key[f"img{s:08d}"][
        "keep"]) for i, s in expected_new.items())
    groups = pq.read_table(everything / "dedup" / "groups.parquet", columns=["key", "component_size"]).to_pylist()
    grouped_full = {r["key"] for r in groups[first_new:] if r["component_size"] > 1}
    grouped_against = {r["key"] for r in rows if r["reason"] not in ("unique",)}
    result = {
        "params": {**vars(args)}, "generate": generated,
        "seconds": {"collection_dedup_once": old_s, "against": against_s, "full_rerun": full_s},
        "speedup_full_over_against": round(full_s / against_s, 2) if against_s else None,
        "against": {k: against.record[k]
                    for k in ("images", "collection", "kept", "duplicates_of_old", "duplicates_of_new")},
        "planted": {"copies_of_old": len(expected_old), "found_as_duplicate_of_their_source": found_old,
                    "copies_of_new": len(expected_new), "grouped_with_their_new_source": found_new},
        "agreement_with_full_run": {"new_rows_grouped_full": len(grouped_full),
                                    "new_rows_grouped_against": len(grouped_against),
                                    "same": len(grouped_full & grouped_against)},
        "full_run": {k: full.record[k] for k in ("images", "kept", "removed", "groups")},
    }
    (out / "dedup_against.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["seconds"]
    print(f"{args.new} new images against a collection of {args.old} ({args.dim}-d): --against {s['against']} s, "
          f"full rerun of {n} {s['full_rerun']} s ({result['speedup_full_over_against']}x); the collection's own "
          f"dedup, once: {s['collection_dedup_once']} s")
    p = result["planted"]
    print(f"planted copies of old images found: {p['found_as_duplicate_of_their_source']}/{p['copies_of_old']}; "
          f"of new images, grouped with their source: {p['grouped_with_their_new_source']}/{p['copies_of_new']}; "
          f"new rows in a group: "
          f"full {len(grouped_full)}, --against {len(grouped_against)}, both {len(grouped_full & grouped_against)}")
    print(f"-> {out / 'dedup_against.json'}")


if __name__ == "__main__":
    main()
