"""`python -m jobs.dedup`: exact, perceptual and embedding near-duplicates → groups, one image kept each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.dedup --images ~/Pictures --out out/pictures      # extract (cached), index, dedup, duplicates.csv
  python -m jobs.dedup --features out/train --threshold 0.6
  python -m jobs.dedup --features out/pool --reference out/eval    # + drop near-copies of an evaluation set
writes OUT/dedup/{groups.parquet, summary.json} (+ OUT/duplicates.csv for --images). Files are never deleted.

--threshold depends on the model: 0.6 is LVD-142M's value for SSCD copy-detection embeddings. For another
model, look at the nearest-neighbour similarities of known copies vs distinct images (make report) and pick
a value between them. Features from random weights turn the embedding stage off (exact + perceptual only)."""


def main(argv: list[str] | None = None) -> None:
    from pipeline.extract.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.dedup", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input (exactly one)")
    src.add_argument("--features", metavar="OUT", help="an extract output root")
    src.add_argument("--images", metavar="DIR", help="an image folder: extracted into --out first (resumable)")
    p.add_argument("--out", default=None, help="output root for --images (default: out)")
    d = p.add_argument_group("dedup")
    d.add_argument("--threshold", type=float, default=0.6, help="cosine above which two images are copies "
                                                                  "(default: %(default)s, model-dependent)")
    d.add_argument("--k", type=int, default=64, help="neighbours per image checked (default: %(default)s)")
    d.add_argument("--phash-distance", type=int, default=8,
                   help="pHash Hamming distance at most this is a copy, mirror-aware (default: %(default)s)")
    d.add_argument("--feature", default="cls", choices=["cls", "patch_mean", "concat"])
    d.add_argument("--embedding", dest="embedding", action="store_true", default=None,
                   help="use the embedding stage even with random weights")
    d.add_argument("--no-embedding", dest="embedding", action="store_false", help="exact + perceptual only")
    d.add_argument("--reference", metavar="REF_OUT", help="extract output of an evaluation set: every group "
                                                          "touching it is dropped (decontamination)")
    d.add_argument("--reference-threshold", type=float, default=0.45, help="(default: %(default)s, LVD-142M)")
    d.add_argument("--memory-budget", type=float, default=4.0, metavar="GiB")
    e = p.add_argument_group("extraction (with --images)")
    e.add_argument("--model", default=DEFAULT_MODEL)
    e.add_argument("--weights", default="hub", help="hub | PATH | random (see python -m jobs.extract --help)")
    e.add_argument("--model-kwargs", default=None)
    e.add_argument("--resolution", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--workers", type=int, default=None)
    e.add_argument("--device", default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if bool(args.features) == bool(args.images):
        p.error("give exactly one of --features OUT or --images DIR")

    def job() -> int:
        from pipeline.extract.config import ExtractConfig, parse_model_kwargs
        from pipeline.dedup.config import DedupConfig
        from pipeline.dedup.run import run_dedup
        from pipeline.dedup.groups import write_duplicates_csv

        root = args.features
        if args.images:
            from pipeline.extract.runner import run_extract

            root = args.out or "out"
            stats = run_extract(ExtractConfig(
                out=root, images=args.images, model=args.model, weights=args.weights,
                model_kwargs=parse_model_kwargs(args.model_kwargs), resolution=args.resolution,
                batch_size=args.batch_size, workers=args.workers, device=args.device, progress=args.progress))
            if stats.failed:
                return 1
        summary = run_dedup(DedupConfig(
            features=root, feature=args.feature, threshold=args.threshold, k=args.k,
            phash_distance=args.phash_distance, embedding=args.embedding, reference=args.reference,
            reference_threshold=args.reference_threshold, memory_budget_gb=args.memory_budget,
            progress=args.progress))
        print(f"dedup: {summary['images']} images, {summary['groups']} groups of copies, "
              f"{summary['duplicates_removed']} duplicates, {summary['contaminated_removed']} contaminated, "
              f"{summary['kept']} kept")
        print(f"  by reason: {json.dumps(summary['reasons'])}; largest group: {summary['largest_component']}")
        print(f"  weights: {summary['weights'].get('source')}; stages: "
              + ", ".join(f"{k} {v.get('edges', 0)} edges" for k, v in summary["stages"].items()))
        if "warning" in summary:
            print(f"  WARNING: {summary['warning']}")
        print(f"  {root}/dedup/groups.parquet, {root}/dedup/summary.json")
        if args.images:
            n = write_duplicates_csv(Path(root) / "dedup" / "groups.parquet", args.images,
                                     Path(root) / "duplicates.csv")
            print(f"  {root}/duplicates.csv: {n} duplicate files, each with the file kept (nothing was deleted)")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
