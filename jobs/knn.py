"""`python -m jobs.knn`: all-vs-all k-NN graph over an index, as resumable Parquet parts."""

from __future__ import annotations

import argparse

from jobs._cli import run_job


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.knn", description=__doc__,
                                epilog="example: python -m jobs.knn --features out/train --k 64  "
                                       "(writes FEATURES/knn/part-NNNNN.parquet: id, neighbours, similarities)")
    p.add_argument("--features", required=True, metavar="OUT", help="an extract output root with an index")
    p.add_argument("--index", default=None, help="index folder (default: FEATURES/index)")
    p.add_argument("--k", type=int, default=64, help="neighbours per image (default: %(default)s)")
    p.add_argument("--out", default=None, help="graph folder (default: FEATURES/knn)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists searched per image, with --workers 1 (default: what the index records; 16-32 "
                        "suits finding copies)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes or Ray tasks (default: 1)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.io.features import open_features
        from pipeline.index.build import load_index
        from pipeline.index.knn import build_graph

        loaded = load_index(args.index or args.features)
        if args.nprobe:
            from pipeline.index.build import set_search_params

            set_search_params(loaded.index, args.nprobe, loaded.record.get("ef_search", 128))
        fs = open_features(args.features)
        if loaded.record["provenance"]["fingerprint"] != fs.provenance["fingerprint"]:
            raise ValueError("the index was built from other features than --features")
        out_dir = args.out or f"{args.features}/knn"
        if args.workers > 1:
            from pipeline.index.knn import build_graph_parallel

            out = build_graph_parallel(args.features, args.index or f"{args.features}/index", out_dir, args.k,
                                       args.workers, executor=args.executor)
        else:
            out = build_graph(fs, loaded.index, loaded.record["feature"], out_dir, args.k, progress=args.progress)
        print(f"knn: k={args.k} graph of {fs.count} images -> {out}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
