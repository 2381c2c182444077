"""`python -m jobs.pack`: write an image folder as webdataset tar shards (original bytes kept)."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """example:
  python -m jobs.pack --images ~/Pictures --out shards/ --shard-size 1000
then: python -m jobs.extract --shards shards/shards.txt --out out/"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.extract.pack import PackConfig

    p.add_argument("--images", required=True, metavar="DIR", help="image folder, read recursively")
    p.add_argument("--out", required=True, metavar="OUT", help="folder for <prefix>-NNNNNN.tar and shards.txt")
    option(p, PackConfig, "shard_size", "images per shard (default: %(default)s)")
    option(p, PackConfig, "prefix", "shard file name prefix (default: %(default)s)")
    add_running_args(p, PackConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.extract.pack import PackConfig, run_pack

    done = run_pack(config_from(PackConfig, args))
    print(f"pack: {len(done.shards)} shards in {args.out}/ (list: {done.shard_list})")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
