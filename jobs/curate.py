"""`python -m jobs.curate`: LVD-142M retrieval of a pool's images near curated seed sets, or balanced sampling."""

from __future__ import annotations

import argparse
import json

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.curate --pool out/pool --queries imagenet=out/in1k,landmarks=out/gldv2
  python -m jobs.curate --pool out/pool --queries out/seeds --mode cluster --clusters 10000
  python -m jobs.curate --pool out/pool --balanced 1000000 --levels 3      # no seed set: flatten the pool
writes POOL/curate/{selected.parquet, summary.json}; then: python -m jobs.export --selection POOL/curate/selected.parquet
The pool is usually deduplicated and decontaminated first (python -m jobs.dedup)."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.curate", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, metavar="POOL_OUT", help="extract output of the uncurated pool")
    p.add_argument("--queries", nargs="*", default=[], metavar="NAME=OUT",
                   help="seed sets (extract outputs), each named: name=OUT[,name=OUT...]")
    p.add_argument("--out", default=None, help="default: POOL/curate")
    p.add_argument("--mode", default="auto", choices=["auto", "sample", "cluster"],
                   help="auto: sample-based for large seed sets, cluster-based for small (default)")
    p.add_argument("--k", type=int, default=4, help="sample-based: neighbours per query (default: 4, LVD-142M)")
    p.add_argument("--min-similarity", type=float, default=0.0, help="sample-based: cosine at least this")
    p.add_argument("--clusters", type=int, default=None, help="cluster-based: k-means clusters (default N/500)")
    p.add_argument("--min-queries", type=int, default=3, help="a cluster counts with more than this many queries")
    p.add_argument("--per-cluster", type=int, default=10_000, help="images taken per cluster (default: 10,000)")
    p.add_argument("--max-per-source", type=int, default=1_000_000, help="images per seed set at most")
    p.add_argument("--auto-threshold", type=int, default=100_000,
                   help="seed sets at least this large are sample-based under --mode auto (default: 100,000)")
    p.add_argument("--balanced", type=int, default=None, metavar="TARGET_SIZE",
                   help="hierarchical k-means + balanced sampling of TARGET_SIZE images, no seeds needed")
    p.add_argument("--levels", type=int, default=2, choices=[2, 3])
    p.add_argument("--feature", default="cls", choices=["cls", "patch_mean", "concat"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.curate.retrieval import CurateConfig, parse_queries, run_curate

        summary = run_curate(CurateConfig(
            pool=args.pool, queries=parse_queries(args.queries), out=args.out, mode=args.mode, k=args.k,
            min_similarity=args.min_similarity, clusters=args.clusters, min_queries=args.min_queries,
            per_cluster=args.per_cluster, max_per_source=args.max_per_source, auto_threshold=args.auto_threshold,
            balanced=args.balanced, levels=args.levels, feature=args.feature, seed=args.seed,
            progress=args.progress))
        print(f"curate: {summary['selected']} of {summary['pool']} pool images selected in {summary['seconds']:.1f} s")
        for name, info in summary["sources"].items():
            print(f"  {name}: {info['queries']} queries, {info['mode']}-based ({info['why']}); "
                  f"{info['selected']} selected, {info['unique']} only by this source")
        if "balanced" in summary:
            b = summary["balanced"]
            print(f"  balanced: {b['selected']} images; top-level cluster sizes pool "
                  f"{b['top_cluster_sizes_pool'][:8]}... selected {b['top_cluster_sizes_selected'][:8]}...")
        print(f"  {args.out or args.pool + '/curate'}/selected.parquet, summary.json")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
