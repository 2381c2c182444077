"""`python -m jobs.parity`: do two ways of computing the features agree? The seed report's PASS/FAIL table."""

from __future__ import annotations

import argparse

from jobs._args import add_model_args, add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """criteria: cosine > 0.999, mean absolute error < 0.01, trimmed (top 5 % removed) mean relative
error < 1 %, per feature (cls, patch_mean). Exits 1 when a pair fails. The first pair is what
--precision auto resolves to on this CPU (bf16 where AMX-BF16 or AVX512-BF16 is present) against fp32; the
report names the choice and why (where auto is fp32, that pair is trivially PASS).
example:
  python -m jobs.parity --compile          # also torch.compile vs eager"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.bench.config import ParityConfig

    option(p, ParityConfig, "out", "folder for parity.json (default: %(default)s)")
    option(p, ParityConfig, "photos", "JPEG folder (default: ../shared/data/unsplash_coenm when present, else "
                                      "generated JPEGs)", metavar="DIR")
    add_model_args(p, ParityConfig, resolution="input size N (default: %(default)s)")
    option(p, ParityConfig, "images", "real photos compared (default: %(default)s)")
    option(p, ParityConfig, "compile", "also torch.compile vs eager (~1 min)")
    add_running_args(p, log_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from pipeline.bench.config import ParityConfig
    from pipeline.bench.parity import format_parity, run_parity_check

    cfg = config_from(ParityConfig, args)
    done = run_parity_check(cfg)
    print(format_parity(done.record))
    print(f"-> {done.path}")
    return 0 if done.passed else 1


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
