"""`python -m jobs.extract`: image features from webdataset shards or an image folder into Parquet."""

from __future__ import annotations

import argparse
import os

from jobs._args import add_model_args, add_running_args, comma_list, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  # shards by brace pattern, the default DINOv2 ViT-S/14-reg4 from the Hugging Face cache
  python -m jobs.extract --shards 'data/train-{000000..000099}.tar' --out out/train
  # a folder of photos, at 224 px, keeping float32
  python -m jobs.extract --images ~/Pictures --out out/photos --dtype float32
  # patch features at the model's native size (DINOv2: 518 px)
  python -m jobs.extract --images ~/Pictures --out out/dense --resolution native
  # a local checkpoint (timm or original facebookresearch layout) on a GPU in bf16
  python -m jobs.extract --shards shards.txt --out out/x --weights dinov2_vits14_reg4_pretrain.pth --precision bf16
  # one node, 4 GPUs: each rank takes every 4th shard
  torchrun --nproc-per-node 4 -m jobs.extract --shards 's3://bucket/train-{000000..000999}.tar' --out out/train

outputs (OUT/): features/<shard>.parquet, failures/<shard>.parquet, _done/<shard>.json, config.json, stats.json.
A rerun skips done shards; a rerun with another model, weights or preprocessing into the same OUT is refused.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.extract.config import DECODES, DTYPES, EXTRAS, RESIZE_MODES, ExtractConfig, rank_from_env
    from pipeline.tasks import EXECUTORS

    rank, world, _ = rank_from_env()
    src = p.add_argument_group("input (exactly one)")
    option(src, ExtractConfig, "shards", "webdataset tar shards: brace patterns (train-{000000..000099}.tar), "
                                         "globs, a .txt file listing shards, local paths, or URLs (s3://, gs://, "
                                         "https://, pipe:CMD)", nargs="+", metavar="SPEC")
    option(src, ExtractConfig, "images", "an image folder, read recursively; key = path relative to DIR; every "
                                         "format Pillow opens (also files whose name hides their format)",
           metavar="DIR")
    p.add_argument("--out", required=True, metavar="OUT", help="output root (created; resumable)")
    add_model_args(p, ExtractConfig, names=("model", "weights", "model_kwargs", "device", "precision", "compile",
                                            "threads"))
    pre = p.add_argument_group("preprocessing (the model's own timm eval transform at the size asked for)")
    add_model_args(pre, ExtractConfig, title=None, names=("resolution",))
    option(pre, ExtractConfig, "crop_pct", "fraction of the resized image kept by the centre crop (default: "
                                           "0.875 at a given --resolution, DINOv2's 224/256; the model's own at "
                                           "native size)", type=float)
    option(pre, ExtractConfig, "resize_mode", "dynamic keeps the aspect ratio: longest side N, sides rounded to "
                                              "the patch size, same-shape images batched together "
                                              "(default: %(default)s)", choices=RESIZE_MODES)
    option(pre, ExtractConfig, "jpeg_draft", "always decode JPEGs at full size (default: reduced DCT decode when "
                                             ">= 2x the target)")
    option(pre, ExtractConfig, "decode", "where JPEGs are decoded: gpu = in batches on the model's device (nvJPEG), "
                                         "resized and cropped there, pHashes from those pixels; other formats and "
                                         "JPEGs it cannot decode take the CPU path per image; auto = gpu on CUDA "
                                         "with the fixed resize, else cpu (default: %(default)s)", choices=DECODES)
    option(pre, ExtractConfig, "max_pixels", "images with more pixels fail as decompression bombs "
                                             "(default: %(default)s)")
    option(pre, ExtractConfig, "image_key", "tar member extension holding the image (default: first of jpg, "
                                            "jpeg, png, webp, ...)")
    option(pre, ExtractConfig, "image_column", "Parquet shards: column holding the images, binary or a struct with "
                                               "'bytes' as datasets.Image writes it (default: image, img, jpg, png, "
                                               "webp, bytes, else the only binary column)", metavar="COLUMN")
    option(pre, ExtractConfig, "keep_columns", "source members or Parquet columns stored as string columns beside "
                                               "the features, e.g. json,txt,url,caption (url and caption are lifted "
                                               "from an img2dataset .json member); export writes them back",
           metavar="NAME,...", type=comma_list())
    option(pre, ExtractConfig, "key_column", "Parquet shards: column holding the sample keys (default: key, "
                                             "__key__, id, else <file stem>_<row number>)", metavar="COLUMN")
    f = p.add_argument_group("features")
    option(f, ExtractConfig, "extras", f"also store: {', '.join(EXTRAS)} (registers = register tokens, gem = GeM "
                                       f"of patch tokens, layers = CLS of the last --last-layers blocks)",
           metavar="NAME,...", type=comma_list())
    option(f, ExtractConfig, "last_layers", "blocks for the 'layers' extra (default: %(default)s)")
    option(f, ExtractConfig, "dtype", "storage type of feature columns (default: %(default)s)", choices=DTYPES)
    r = p.add_argument_group("running")
    add_model_args(r, ExtractConfig, title=None, names=("batch_size",))
    option(r, ExtractConfig, "workers", "DataLoader worker processes that read and decode (default: one per core up "
                                        "to 8 on a CPU, at the lowest priority; cores - 1 up to 8 beside an "
                                        "accelerator)")
    r.add_argument("--executor", default=os.environ.get("EXECUTOR") or EXECUTORS[0], choices=EXECUTORS,
                   help="local: this process (and torchrun ranks); ray: actors on a Ray cluster ($RAY_ADDRESS, "
                        "or a local one), one per GPU or per --ray-cpus-per-actor CPUs (default: %(default)s)")
    # Ray's options are left unset unless given, so run_extract_ray's own defaults apply (and --help need not
    # import it: it loads torch).
    r.add_argument("--ray-actors", dest="actors", type=int, help="number of actors (default: fill the cluster)")
    r.add_argument("--ray-cpus-per-actor", dest="cpus_per_actor", type=float,
                   help="CPUs reserved per actor (default: run_extract_ray's)")
    r.add_argument("--ray-retries", dest="max_retries", type=int,
                   help="retries of a shard whose actor died (default: run_extract_ray's)")
    r.add_argument("--rank", type=int, default=rank, help="this process's rank (default: $RANK or 0)")
    r.add_argument("--world-size", type=int, default=world, help="number of ranks (default: $WORLD_SIZE or 1)")
    option(r, ExtractConfig, "folder_shard_size", "images per unit of work for --images (default: %(default)s)")
    option(r, ExtractConfig, "repair", "drop the shards of OUT made with other settings than its config.json, "
                                       "then redo them")
    add_running_args(r, ExtractConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.extract.config import ExtractConfig

    cfg = config_from(ExtractConfig, args, shards=tuple(args.shards))
    if args.executor == "ray":
        from pipeline.extract.ray import run_extract_ray

        given = {k: getattr(args, k) for k in ("actors", "cpus_per_actor", "max_retries")
                 if getattr(args, k) is not None}
        stats = run_extract_ray(cfg, **given)
    else:
        from pipeline.extract.runner import run_extract

        stats = run_extract(cfg)
    print(f"extract: {stats.summary()}\noutputs in {args.out}/ (features/, failures/, stats.json)")
    return 1 if stats.failed else 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
