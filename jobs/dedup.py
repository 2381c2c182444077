"""`python -m jobs.dedup`: exact, perceptual and embedding near-duplicates → groups, one image kept each."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from jobs._args import (
    FEATURE_METAVAR,
    FEATURES_HELP,
    add_keys_arg,
    add_model_args,
    add_plan_arg,
    add_running_args,
    config_from,
    default,
    option,
    parsed,
)
from jobs._cli import run_command

if TYPE_CHECKING:
    from pipeline.dedup.results import DedupResult, SweepResult

EPILOG = """examples:
  python -m jobs.dedup --images ~/Pictures --out out/pictures      # extract (cached), index, dedup, duplicates.csv
  python -m jobs.dedup --features out/train --threshold 0.6
  python -m jobs.dedup --features out/pool --reference out/eval    # + drop near-copies of an evaluation set
  python -m jobs.dedup --features out/new --against out/pool       # new images against a processed collection
  python -m jobs.dedup --features out/train --sweep 0.95,0.9,0.85,0.8   # dry run: what each threshold removes
  python -m jobs.dedup --features out/train --keep hard            # keep the image farthest from its centroid
writes OUT/dedup/{groups.parquet, summary.json} (+ OUT/duplicates.csv for --images). Files are never deleted.

--threshold depends on the model: 0.6 is LVD-142M's value for SSCD copy-detection embeddings. For another
model, look at the nearest-neighbour similarities of known copies vs distinct images (make report) and pick
a value between them. Features from random weights turn the embedding stage off (exact + perceptual only)."""

def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.dedup.config import KEEP_POLICIES, DedupConfig, parse_sweep
    from pipeline.extract.config import ExtractConfig

    src = p.add_argument_group("input (exactly one)").add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="FEATURES", help=FEATURES_HELP + " (embedding edges only: no hashes)")
    src.add_argument("--images", metavar="DIR", help="an image folder: extracted into --out first (resumable)")
    p.add_argument("--out", dest="root", help="output root: --images is extracted into it (required with --images: "
                                             "nothing is written to the current folder unasked); with --features "
                                             "the dedup is written to OUT/dedup/ and nothing is written under "
                                             "FEATURES (default: FEATURES/dedup/)")
    d = p.add_argument_group("dedup")
    option(d, DedupConfig, "threshold", "cosine above which two images are copies (default: %(default)s, "
                                        "model-dependent)")
    option(d, DedupConfig, "k", "neighbours per image checked (default: %(default)s)")
    option(d, DedupConfig, "phash_distance", "pHash Hamming distance at most this is a copy, mirror-aware "
                                             "(default: %(default)s)")
    option(d, DedupConfig, "phash_min_cosine", "with the embedding stage on, a pHash match links two images only "
                                               "at this cosine or more: unrelated hashes meet within a few bits by "
                                               "chance in large pools (default: %(default)s; -1: no check)")
    option(d, DedupConfig, "feature", "vector compared (default: %(default)s)", metavar=FEATURE_METAVAR)
    add_keys_arg(d, DedupConfig)
    embedding = default(DedupConfig, "embedding")
    d.add_argument("--embedding", dest="embedding", action="store_true", default=embedding,
                   help="use the embedding stage even with random weights")
    d.add_argument("--no-embedding", dest="embedding", action="store_false", help="exact + perceptual only")
    option(d, DedupConfig, "against", "extract output of a collection already processed: the new images are "
                                      "grouped with each other and with it, it is never regrouped; writes "
                                      "dedup/against.parquet (each new image: keep, or duplicate of an old or a new "
                                      "key)", metavar="OUT_OLD")
    option(d, DedupConfig, "reference", "extract output of an evaluation set: every group touching it is dropped "
                                        "(decontamination)", metavar="REF_OUT")
    option(d, DedupConfig, "reference_threshold", "(default: %(default)s, LVD-142M)")
    option(d, DedupConfig, "max_contaminated", "stop when decontamination would drop a larger share of the pool: "
                                               "the reference threshold is likely wrong for the model "
                                               "(default: %(default)s)", metavar="SHARE")
    option(d, DedupConfig, "force", "drop them anyway")
    option(d, DedupConfig, "where", "only images matching EXPR take part, e.g. \"width >= 256 and sharpness > 50\" "
                                    "(columns of the feature files: key, shard, index, width, height, the "
                                    "--extras stats signals, kept columns; id; outlier with a k-NN graph); the "
                                    "others are compared with nothing and stay (keep, reason 'excluded')",
           metavar="EXPR")
    option(d, DedupConfig, "memory_budget_gb", "GiB dedup may hold past its imports: the per-row records, the vectors "
           "(read from the feature files as needed when they do not fit) and the exact re-scoring's block; --plan "
           "shows the split (default: %(default)s)",
           flag="--memory-budget", metavar="GiB")
    option(d, DedupConfig, "keep", "which image of a group is kept: quality = the copy a person would keep, "
                                   "read from the files: most pixels, colour over greyscale, sharper, less "
                                   "compressed, has EXIF, earliest modified, shortest path (why it won: "
                                   "keep_reason in groups.parquet and duplicates.csv); largest = most pixels; "
                                   "hard / easy = SemDeDup's farthest from / closest to its k-means cluster "
                                   "centroid (needs the embedding stage); random = seeded by --seed and the key; "
                                   "ties go to the smallest key (default: %(default)s)", choices=KEEP_POLICIES)
    option(d, DedupConfig, "clusters", "k-means clusters of the pool for --keep hard/easy (default: √N, at "
                                       "most 1000)")
    option(d, DedupConfig, "seed", "seed of the k-means and of --keep random (default: %(default)s)")
    option(d, DedupConfig, "sweep", "DRY RUN: for each threshold, how many images would be removed (share of "
                                    "the pool, groups, largest group), from one k-NN graph searched once at "
                                    "the lowest; prints a table and writes dedup/sweep.parquet only (no "
                                    "groups.parquet, summary.json or duplicates.csv; --threshold is unused)",
           type=parsed(parse_sweep), metavar="T1,T2,...")
    e = add_model_args(p, ExtractConfig, title="extraction (with --images)",
                       names=("model", "weights", "model_kwargs", "resolution", "batch_size", "device",
                              "precision"))
    option(e, ExtractConfig, "workers", "DataLoader worker processes that read and decode (default: one per core up "
                                        "to 8 on a CPU, at the lowest priority; cores - 1 up to 8 beside an "
                                        "accelerator)")
    add_plan_arg(p)
    add_running_args(p, DedupConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.results import AgainstResult, SweepResult
    from pipeline.layout import OutputRoot

    if args.plan:
        from pipeline.dedup.plan import plan_dedup
        from pipeline.errors import ConfigError

        if args.images:
            raise ConfigError("--plan works on extracted features: make dedup FEATURES=... ARGS='--plan'")
        root = args.root and str(OutputRoot(args.root).dedup_dir)
        print(plan_dedup(config_from(DedupConfig, args, out=root)).text)
        return 0
    if args.images:
        from pipeline.dedup.run import dedup_images
        from pipeline.errors import ConfigError
        from pipeline.extract.config import ExtractConfig

        if not args.root:
            raise ConfigError("--images needs --out: the folder its features, dedup and duplicates.csv go to "
                              "(e.g. --out out/pictures)")
        extract = config_from(ExtractConfig, args, out=args.root)
        folder = dedup_images(extract, config_from(DedupConfig, args, features=extract.out))
        print(f"extract: {folder.extract.summary()}")
        if folder.dedup is None:
            print(f"  {len(folder.extract.failed)} shards could not be read: rerun the same command to retry them")
            return 1
        if isinstance(folder.dedup, SweepResult):
            print_sweep(folder.dedup)
            return 0
        print_summary(folder.dedup)
        print(f"  {folder.csv}: {folder.duplicate_files} duplicate files, each with the file kept (nothing was "
              f"deleted)")
        return 0
    from pipeline.dedup.run import run_dedup

    root = OutputRoot(args.root) if args.root else OutputRoot.for_features(args.features)
    done = run_dedup(config_from(DedupConfig, args, out=str(root.dedup_dir) if args.root else None))
    if isinstance(done, SweepResult):
        print_sweep(done)
    elif isinstance(done, AgainstResult):
        print(f"dedup against {done.against} ({done.collection} images): {done.images} new images, "
              f"{done.kept} kept, {done.duplicates_of_old} duplicates of the collection, "
              f"{done.duplicates_of_new} of other new images")
        print(f"  by reason: {json.dumps(done.reasons)}; -> {done.against_path}")
    else:
        print_summary(done)
    return 0


def print_summary(done: DedupResult) -> None:
    print(f"dedup: {done.images} images, {done.groups} groups of copies, {done.duplicates} duplicates, "
          f"{done.contaminated} contaminated, {done.kept} kept")
    print(f"  by reason: {json.dumps(done.reasons)}; largest group: {done.largest_group}")
    print(f"  weights: {weights_text(done.weights)}; stages: "
          + ", ".join(f"{k} {v.get('edges', 0)} edges" + (f" (skipped: {v['skipped']})" if "skipped" in v else "")
                      + (f" (+{v['edges_excluded']} touching excluded images, not used)"
                         if v.get("edges_excluded") else "")
                      + (f" (+{v['below_min_cosine']} matches below --phash-min-cosine {v['min_cosine']:g}, "
                         "not linked)" if v.get("below_min_cosine") else "")
                      for k, v in done.stages.items()))
    if done.where is not None:
        print(f"  --where {done.where['expression']}: {done.where['excluded']} of {done.images} "
              f"images excluded (compared with nothing, kept)")
    keep = done.keep
    if keep.get("policy") == "quality":
        unread = f"; {keep['unreadable']} grouped files could not be checked" if keep.get("unreadable") else ""
        print(f"  kept per group: the best copy (pixels, colour, sharpness, compression, EXIF, age, path){unread}")
    elif keep.get("policy", "largest") != "largest":
        over = f" over {keep['clusters']} k-means clusters" if "clusters" in keep else ""
        print(f"  kept per group: {keep['policy']}{over} (seed {keep['seed']})")
    if done.warning:
        print(f"  WARNING: {done.warning}")
    print(f"  {done.groups_path}, {done.summary_path}")


def weights_text(weights: dict | None) -> str:
    """The weights' source (`random`, `hub`, `file`, ...), or that features made elsewhere do not say."""
    if not (weights or {}).get("source"):
        return "unknown (features made elsewhere, no export-npy provenance)"
    return str(weights["source"])


def print_sweep(sweep: SweepResult) -> None:
    from pipeline.dedup.sweep import format_sweep

    fixed = [label for name, label in (("exact", "exact"), ("phash", "pHash"))
             if "skipped" not in sweep.stages[name]]  # features made elsewhere have no image hashes
    print(f"dedup sweep (dry run): {sweep.images} images, k = {sweep.k} neighbours each, "
          + (f"{' and '.join(fixed)} edges at every threshold" if fixed else "embedding edges only"))
    print(format_sweep(sweep.rows))
    print(f"  {sweep.path} (nothing else written; removed counts at low thresholds are lower bounds when "
          f"k is small, as for separate runs with the same k)")


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
