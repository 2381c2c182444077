"""`python -m jobs.export`: write a selection (dedup keepers or curate selection) as new webdataset shards."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.export --selection out/pool/dedup/groups.parquet --out clean/
  python -m jobs.export --selection out/pool/curate/selected.parquet --out curated/ --shard-size 5000
  python -m jobs.export --selection out/pool/dedup/groups.parquet --out subset/ --format uids
Every member of each sample is copied byte for byte; unsafe member names are refused."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.curate.config import ExportConfig

    p.add_argument("--selection", required=True, help="dedup/groups.parquet (keepers) or curate/selected.parquet")
    p.add_argument("--out", required=True, help="folder for the new shards, shards.txt and manifest.json")
    option(p, ExportConfig, "features", "the extract output the selection refers to (default: inferred)")
    option(p, ExportConfig, "shard_size", "samples per shard (default: %(default)s)")
    option(p, ExportConfig, "prefix", "shard file name prefix (default: %(default)s)")
    option(p, ExportConfig, "format", "webdataset: the samples as new shards; uids: only the keys, as uids.npy "
                                      "(sorted, DataComp's u8,u8 layout: 32-hex-digit keys as they are, other keys "
                                      "by MD5) and keys.txt, for tools that take subset files (default: "
                                      "%(default)s)", choices=["webdataset", "uids"])
    option(p, ExportConfig, "where", "only selected samples whose feature row matches EXPR are exported, e.g. "
                                     "\"width >= 512 and brightness > 0.1\" (columns of the feature files: key, "
                                     "shard, index, width, height, the --extras stats signals, kept columns; id; "
                                     "outlier with a k-NN graph)", metavar="EXPR")
    add_running_args(p, ExportConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.curate.config import ExportConfig
    from pipeline.curate.export import run_export

    done = run_export(config_from(ExportConfig, args))
    if done.format == "uids":
        print(f"export: {done.samples} keys -> {args.out}/uids.npy, keys.txt ({done.uids})")
        return 0
    print(f"export: {done.samples} samples in {len(done.shards)} shards -> {args.out}/ (manifest.json)")
    if done.rejected:
        print(f"  {done.rejected} samples refused for unsafe member names (listed in manifest.json)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
