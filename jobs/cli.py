"""`dinocurate`: one command for every stage; `dinocurate <command> --help` equals `python -m jobs.<command> --help`.

Each subcommand is a job module (jobs/<command>.py): its description, epilog, options and run are the ones
`python -m jobs.<command>` uses. Only the subcommand that runs gets its options built, so that `dinocurate
--help` stays quick (building a stage's options imports its library, some of which load torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable

from jobs._cli import parser_settings, run_job, summary

# In the order data flows, then the measurements and the demo.
COMMANDS = ("extract", "pack", "index", "search", "knn", "dedup", "apply", "curate", "export", "export-npy",
            "evaluate", "report", "pca", "serve", "bench", "parity", "demo")


def module_of(command: str) -> str:
    """The job module of a command: `export-npy` → `jobs.export_npy`."""
    return f"jobs.{command.replace('-', '_')}"


def build_parser(with_options: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """`dinocurate` with a subcommand per job; the options of the commands in `with_options` are built."""
    p = argparse.ArgumentParser(prog="dinocurate", description=__doc__.strip().splitlines()[0],
                                epilog="every command runs the same as python -m jobs.<command>; "
                                       "dinocurate <command> --help lists its options and examples")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    for name in COMMANDS:
        job = importlib.import_module(module_of(name))
        sp = sub.add_parser(name, help=summary(job), **parser_settings(job))
        if name in with_options:
            job.add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(with_options=[command] if command in COMMANDS else []).parse_args(argv)
    job = importlib.import_module(module_of(args.command))
    run_job(lambda: job.run(args), args.log_level, getattr(args, "offline", False))


if __name__ == "__main__":
    main()
