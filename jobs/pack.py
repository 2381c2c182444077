"""`python -m jobs.pack`: write an image folder as webdataset tar shards (original bytes kept)."""

from __future__ import annotations

import argparse

from jobs._cli import run_job


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.pack", description=__doc__,
                                epilog="example: python -m jobs.pack --images ~/Pictures --out shards/ --shard-size 1000"
                                       "\nthen: python -m jobs.extract --shards shards/shards.txt --out out/")
    p.add_argument("--images", required=True, metavar="DIR", help="image folder, read recursively")
    p.add_argument("--out", required=True, metavar="OUT", help="folder for <prefix>-NNNNNN.tar and shards.txt")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: %(default)s)")
    p.add_argument("--prefix", default="shard", help="shard file name prefix (default: %(default)s)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.io.pack import pack_folder

        paths = pack_folder(args.images, args.out, args.shard_size, args.prefix)
        print(f"pack: {len(paths)} shards in {args.out}/ (list: {args.out}/shards.txt)")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
