"""`python -m jobs.knn`: all-vs-all k-NN graph over an index, as resumable Parquet parts."""

from __future__ import annotations

import argparse

from jobs._args import (
    FEATURES_HELP,
    add_executor_args,
    add_keys_arg,
    add_plan_arg,
    add_running_args,
    config_from,
    option,
)
from jobs._cli import run_command

EPILOG = """example:
  python -m jobs.knn --features out/train --k 64
writes FEATURES/knn/part-NNNNN.parquet (id, neighbours, similarities); a rerun resumes after the last part."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.index.config import KnnConfig

    p.add_argument("--features", required=True, metavar="FEATURES", help=FEATURES_HELP + "; with an index")
    add_keys_arg(p, KnnConfig)
    option(p, KnnConfig, "index", "index folder (default: FEATURES/index)")
    option(p, KnnConfig, "k", "neighbours per image (default: %(default)s)")
    option(p, KnnConfig, "out", "graph folder (default: FEATURES/knn)")
    option(p, KnnConfig, "nprobe", "IVF lists searched per image, with --workers 1 (default: what the index "
                                   "records; 16-32 suits finding copies)")
    add_executor_args(p, KnnConfig, "parallel processes or Ray tasks (default: %(default)s)")
    add_plan_arg(p)
    add_running_args(p, KnnConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.index.config import KnnConfig
    from pipeline.index.knn import run_knn

    if args.plan:
        from pipeline.index.planner import plan_knn

        print(plan_knn(config_from(KnnConfig, args)).text)
        return 0
    result = run_knn(config_from(KnnConfig, args))
    print(f"knn: k={result.k} graph of {result.images} images -> {result.graph}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
