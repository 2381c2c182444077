"""`python -m jobs.index`: a Faiss index over an extract output's features (cosine similarity)."""

from __future__ import annotations

import argparse

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.index --features out/train                       # auto: Flat / IVF-Flat / IVF-SQ8 / IVF-PQ
  python -m jobs.index --features out/train --factory 'IVF4096,PQ32x4fs' --feature concat
writes FEATURES/index/{index.faiss, ids.parquet, index.json} (or --out)."""


def add_index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feature", default="cls", choices=["cls", "patch_mean", "concat"],
                   help="vector to index (default: %(default)s; concat = both, each normalised)")
    p.add_argument("--factory", default=None, help="a Faiss index_factory string instead of the automatic choice")
    p.add_argument("--memory-budget", type=float, default=4.0, metavar="GiB",
                   help="memory the index may use; decides the automatic choice (default: %(default)s)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.index", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True, metavar="OUT", help="an extract output root")
    p.add_argument("--out", default=None, help="index folder (default: FEATURES/index)")
    add_index_args(p)
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists searched (default: max(16, nlist/64))")
    p.add_argument("--train-size", type=int, default=256 * 1024, help="training sample (default: %(default)s)")
    p.add_argument("--parts", type=int, default=1,
                   help="IVF only: add the vectors in N parallel parts and merge them (default: 1)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="runs the parts (with --parts)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.index.build import IndexConfig, build_index
        from pipeline.index.parts import build_index_parts

        cfg = IndexConfig(features=args.features, out=args.out, feature=args.feature, factory=args.factory,
                          memory_budget_gb=args.memory_budget, nprobe=args.nprobe, train_size=args.train_size,
                          progress=args.progress)
        record = (build_index_parts(cfg, args.parts, args.executor) if args.parts > 1 else build_index(cfg))
        print(f"index: {record['factory']} over {record['count']} × {record['dim']} ({record['feature']}) in "
              f"{record['build_seconds']:.1f} s -> {args.out or args.features + '/index'}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
