"""`python -m jobs.export_npy`: features as emb.npy (N×D, L2-normalised rows) + keys.parquet, for other tools."""

from __future__ import annotations

import argparse

from jobs._args import FEATURE_METAVAR, FEATURES_HELP, add_keys_arg, add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.export_npy --features out/train --out emb/                    # cls, float32
  python -m jobs.export_npy --features out/train --out emb/ --feature concat --dtype float16
writes OUT/emb.npy (row i = id i, normalised as the pipeline compares them: cosine = dot product),
OUT/keys.parquet (id, key, shard, index) and OUT/emb.provenance.json (model, weights, feature: read back with
the .npy, so random weights still turn the dedup embedding stage off). Every stage takes the .npy back as
FEATURES, e.g.
  python -m jobs.curate --pool emb/emb.npy --keys emb/keys.parquet --balanced 1000"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.curate.npy_export import ExportNpyConfig

    p.add_argument("--features", required=True, metavar="FEATURES", help=FEATURES_HELP)
    add_keys_arg(p, ExportNpyConfig)
    p.add_argument("--out", required=True, help="folder for emb.npy, keys.parquet and emb.provenance.json")
    option(p, ExportNpyConfig, "feature", "vector exported (default: %(default)s; concat = both, each normalised)",
           metavar=FEATURE_METAVAR)
    option(p, ExportNpyConfig, "dtype", "of emb.npy; float16 halves the file (default: %(default)s)",
           choices=["float16", "float32"])
    option(p, ExportNpyConfig, "batch_rows", "rows converted at a time (default: %(default)s)")
    add_running_args(p, ExportNpyConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.curate.npy_export import ExportNpyConfig, run_export_npy

    done = run_export_npy(config_from(ExportNpyConfig, args))
    print(f"export-npy: {done.rows} × {done.dim} {done.dtype} ({done.feature}, L2-normalised) in "
          f"{done.seconds:.1f} s -> {done.emb}, {done.keys}, {done.provenance_file}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
