"""`python -m jobs.curate`: LVD-142M retrieval of a pool's images near curated seed sets, or balanced sampling."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.curate --pool out/pool --queries imagenet=out/in1k,landmarks=out/gldv2
  python -m jobs.curate --pool out/pool --queries out/seeds --mode cluster --clusters 10000
  python -m jobs.curate --pool out/pool --balanced 1000000 --levels 3      # no seed set: flatten the pool
writes POOL/curate/{selected.parquet, summary.json}; then:
  python -m jobs.export --selection POOL/curate/selected.parquet --out curated/
The pool is usually deduplicated and decontaminated first (python -m jobs.dedup)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.curate.retrieval import CurateConfig
    from pipeline.io.features import FEATURE_CHOICES

    p.add_argument("--pool", required=True, metavar="POOL_OUT", help="extract output of the uncurated pool")
    option(p, CurateConfig, "queries", "seed sets (extract outputs), each named: name=OUT[,name=OUT...]",
           nargs="*", metavar="NAME=OUT")
    option(p, CurateConfig, "out", "default: POOL/curate")
    option(p, CurateConfig, "mode", "auto: sample-based for large seed sets, cluster-based for small "
                                    "(default: %(default)s)", choices=["auto", "sample", "cluster"])
    option(p, CurateConfig, "k", "sample-based: neighbours per query (default: %(default)s, LVD-142M)")
    option(p, CurateConfig, "min_similarity", "sample-based: cosine at least this (default: %(default)s)")
    option(p, CurateConfig, "clusters", "cluster-based: k-means clusters (default N/500)")
    option(p, CurateConfig, "min_queries", "a cluster counts with more than this many queries "
                                           "(default: %(default)s)")
    option(p, CurateConfig, "per_cluster", "images taken per cluster (default: %(default)s)")
    option(p, CurateConfig, "max_per_source", "images per seed set at most (default: %(default)s)")
    option(p, CurateConfig, "auto_threshold", "seed sets at least this large are sample-based under --mode auto "
                                              "(default: %(default)s)")
    option(p, CurateConfig, "balanced", "hierarchical k-means + balanced sampling of TARGET_SIZE images, no seeds "
                                        "needed", metavar="TARGET_SIZE")
    option(p, CurateConfig, "levels", "hierarchical k-means levels (default: %(default)s)", choices=[2, 3])
    option(p, CurateConfig, "feature", "vector compared (default: %(default)s)", choices=FEATURE_CHOICES)
    option(p, CurateConfig, "memory_budget_gb", "memory a pool index may use (default: %(default)s)",
           flag="--memory-budget", metavar="GiB")
    option(p, CurateConfig, "seed", "(default: %(default)s)")
    add_running_args(p, CurateConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.curate.retrieval import CurateConfig, parse_queries, run_curate

    cfg = config_from(CurateConfig, args, queries=parse_queries(args.queries))
    summary = run_curate(cfg)
    print(f"curate: {summary['selected']} of {summary['pool']} pool images selected in {summary['seconds']:.1f} s")
    for name, info in summary["sources"].items():
        print(f"  {name}: {info['queries']} queries, {info['mode']}-based ({info['why']}); "
              f"{info['selected']} selected, {info['unique']} only by this source")
    if "balanced" in summary:
        b = summary["balanced"]
        print(f"  balanced: {b['selected']} images; top-level cluster sizes pool "
              f"{b['top_cluster_sizes_pool'][:8]}... selected {b['top_cluster_sizes_selected'][:8]}...")
    print(f"  {cfg.out or cfg.pool + '/curate'}/selected.parquet, summary.json")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
