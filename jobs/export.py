"""`python -m jobs.export`: write a selection (dedup keepers or curate selection) as new webdataset shards."""

from __future__ import annotations

import argparse

from jobs._cli import run_job


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m jobs.export", description=__doc__,
        epilog="examples:\n  python -m jobs.export --selection out/pool/dedup/groups.parquet --out clean/\n"
               "  python -m jobs.export --selection out/pool/curate/selected.parquet --out curated/ --shard-size 5000\n"
               "Every member of each sample is copied byte for byte; unsafe member names are refused.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--selection", required=True, help="dedup/groups.parquet (keepers) or curate/selected.parquet")
    p.add_argument("--out", required=True, help="folder for the new shards, shards.txt and manifest.json")
    p.add_argument("--features", default=None, help="the extract output the selection refers to (default: inferred)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: %(default)s)")
    p.add_argument("--prefix", default="export")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.curate.export import ExportConfig, run_export

        m = run_export(ExportConfig(selection=args.selection, out=args.out, features=args.features,
                                    shard_size=args.shard_size, prefix=args.prefix, progress=args.progress))
        print(f"export: {m['samples']} samples in {len(m['shards'])} shards -> {args.out}/ (manifest.json)")
        if m["rejected"]:
            print(f"  {len(m['rejected'])} samples refused for unsafe member names (listed in manifest.json)")
            return 1
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
