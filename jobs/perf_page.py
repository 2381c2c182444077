"""`python -m jobs.perf_page`: docs/PERFORMANCE.md from benchmarks/results/*.json (make perf-page)."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args
from jobs._cli import run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="benchmarks/results", help="folder of benchmark records (default: %(default)s)")
    p.add_argument("--page", default="docs/PERFORMANCE.md", help="the page to write (default: %(default)s)")
    add_running_args(p, log_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from pipeline.bench.perfpage import write_page

    print(f"-> {write_page(args.results, args.page)}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
