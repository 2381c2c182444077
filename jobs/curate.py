"""`python -m jobs.curate`: LVD-142M retrieval of a pool's images near curated seed sets, or balanced sampling."""

from __future__ import annotations

import argparse

from jobs._args import (
    FEATURE_METAVAR,
    FEATURES_HELP,
    add_keys_arg,
    add_plan_arg,
    add_running_args,
    comma_list,
    config_from,
    option,
)
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.curate --pool out/pool --queries imagenet=out/in1k,landmarks=out/gldv2
  python -m jobs.curate --pool out/pool --queries out/seeds --mode cluster --clusters 10000
  python -m jobs.curate --pool out/pool --balanced 1000000                 # no seed set: flatten the pool
  python -m jobs.curate --pool out/pool --balanced 100000 --levels-k 2048,204,40 --resample-steps 0   # plain
writes POOL/curate/{selected.parquet, summary.json}; then:
  python -m jobs.export --selection POOL/curate/selected.parquet --out curated/
The pool is usually deduplicated and decontaminated first (python -m jobs.dedup)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.curate.config import CurateConfig

    p.add_argument("--pool", required=True, metavar="POOL", help="the uncurated pool: " + FEATURES_HELP)
    add_keys_arg(p, CurateConfig)
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
    option(p, CurateConfig, "levels", "hierarchical k-means levels (default by pool size: 3 up to 2M images, 4 "
                                      "above)")
    option(p, CurateConfig, "levels_k", "clusters per level, finest first, e.g. 2048,204,40 (default: leaves "
                                        "~3.5·√N, then 10× and 5× fewer)", type=comma_list(int), metavar="K,K,...")
    option(p, CurateConfig, "resample_steps", "resampling k-means steps per level, or one for all; 0 = plain "
                                              "hierarchical k-means (default: 10 on the leaves up to 2M images, "
                                              "3 above; 0 on the levels above)", type=comma_list(int),
           metavar="R[,R...]")
    option(p, CurateConfig, "resample_size", "points kept per cluster in a resampling step, per level or one for "
                                             "all (default: half the mean cluster size)", type=comma_list(int),
           metavar="S[,S...]")
    option(p, CurateConfig, "sampling", "which images of a leaf cluster are taken: random, or closest to its "
                                        "centroid (default: %(default)s)", choices=["random", "closest"])
    option(p, CurateConfig, "feature", "vector compared (default: %(default)s)", metavar=FEATURE_METAVAR)
    option(p, CurateConfig, "memory_budget_gb", "memory a pool index may use; --balanced holds the vectors as "
                                                "float16 within it, else streams them (default: %(default)s)",
           flag="--memory-budget", metavar="GiB")
    option(p, CurateConfig, "seed", "(default: %(default)s)")
    option(p, CurateConfig, "where", "only pool images matching EXPR may be selected, e.g. \"sharpness > 50 and "
                                     "outlier > 0.2\" (columns of the feature files: key, shard, index, width, "
                                     "height, the --extras stats signals, kept columns; id; outlier with a k-NN "
                                     "graph); neighbours and clusters are taken among them", metavar="EXPR")
    add_plan_arg(p)
    add_running_args(p, CurateConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.retrieval import parse_queries, run_curate

    cfg = config_from(CurateConfig, args, queries=parse_queries(args.queries))
    if args.plan:
        from pipeline.curate.plan import plan_balanced

        print(plan_balanced(cfg).text)
        return 0
    done = run_curate(cfg)
    print(f"curate: {done.selected} of {done.pool} pool images selected in {done.seconds:.1f} s")
    for name, info in done.sources.items():
        print(f"  {name}: {info['queries']} queries, {info['mode']}-based ({info['why']}); "
              f"{info['selected']} selected, {info['unique']} only by this source")
    if done.balanced is not None:
        b = done.balanced
        print(f"  balanced: {b['selected']} images; levels {b['levels']}, resampling steps {b['resample_steps']}, "
              f"{b['sampling']} at the leaves; top-level cluster sizes pool "
              f"{b['top_cluster_sizes_pool'][:8]}... selected {b['top_cluster_sizes_selected'][:8]}...")
    print(f"  {done.selected_path}, {done.summary_path.name}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
