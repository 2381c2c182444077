"""`python -m jobs.demo`: pack a few photos into shards, extract their features, show how to read them."""

from __future__ import annotations

import argparse

from jobs._args import add_model_args, add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.demo                                        # into ~/.cache/dinocurate/demo ($XDG_CACHE_HOME)
  python -m jobs.demo --out demo/ --weights dinov2_vits14_reg4_pretrain.pth
the photos: ../shared/data/pkgimages when present, else 12 made offline from matplotlib's sample photos."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.extract.config import DemoConfig

    option(p, DemoConfig, "out", "demo folder (default: %(default)s)")
    add_model_args(p, DemoConfig,
                   weights="hub, a weights file, or random (default: the hub cache if it has the model, else "
                           "random weights, announced and recorded)",
                   resolution="input size (default: %(default)s, for speed)")
    add_running_args(p, DemoConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.extract.config import DemoConfig
    from pipeline.extract.demo import format_demo, run_demo

    result = run_demo(config_from(DemoConfig, args))
    print(format_demo(result))
    return 1 if result.stats.failed else 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
