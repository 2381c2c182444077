"""`python -m jobs.index`: a Faiss index over an extract output's features (cosine similarity)."""

from __future__ import annotations

import argparse

from jobs._args import (
    FEATURE_METAVAR,
    FEATURES_HELP,
    add_executor_args,
    add_keys_arg,
    add_plan_arg,
    add_running_args,
    config_from,
    option,
)
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.index --features out/train                       # auto: Flat / IVF-Flat / IVF-SQ8 / IVF-PQ
  python -m jobs.index --features out/train --factory 'IVF4096,PQ32x4fs' --feature concat
writes FEATURES/index/{index.faiss, ids.parquet, index.json} (or --out)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.index.config import IndexConfig

    p.add_argument("--features", required=True, metavar="FEATURES", help=FEATURES_HELP)
    add_keys_arg(p, IndexConfig)
    option(p, IndexConfig, "out", "index folder (default: FEATURES/index)")
    option(p, IndexConfig, "feature", "vector to index (default: %(default)s; concat = both, each normalised)",
           metavar=FEATURE_METAVAR)
    option(p, IndexConfig, "factory", "a Faiss index_factory string instead of the automatic choice")
    option(p, IndexConfig, "memory_budget_gb", "memory the index may use; decides the automatic choice "
                                               "(default: %(default)s)", flag="--memory-budget", metavar="GiB")
    option(p, IndexConfig, "nprobe", "IVF lists searched (default: max(16, nlist/64))")
    option(p, IndexConfig, "train_size", "training sample (default: %(default)s)")
    option(p, IndexConfig, "update", "add the vectors of shards extracted since the index was built, without "
                                     "retraining; ids stay stable (new shards must sort after the indexed ones; an "
                                     "image folder that gained files: rebuild instead); "
                                     "refused for features made with another model or preprocessing")
    add_executor_args(p, IndexConfig, "IVF only: add the vectors in N parallel parts and merge them "
                                      "(default: %(default)s)", units="parts",
                      executor_help="runs the parts (with --parts): local processes, or Ray tasks "
                                    "($RAY_ADDRESS, or a local cluster) (default: %(default)s)")
    add_plan_arg(p)
    add_running_args(p, IndexConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.index.build import run_index
    from pipeline.index.config import IndexConfig

    if args.plan:
        from pipeline.index.planner import plan_index

        print(plan_index(config_from(IndexConfig, args)).text)
        return 0
    done = run_index(config_from(IndexConfig, args))
    if done.added is not None:
        print(f"index: added {done.added} vectors of {done.added_shards} new shards in {done.seconds:.1f} s; "
              f"{done.count} in all -> {done.path}")
        return 0
    print(f"index: {done.factory} over {done.count} × {done.dim} ({done.feature}) in {done.seconds:.1f} s -> "
          f"{done.path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
