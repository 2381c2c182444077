"""Shared by the job entry points: their parsers, logging set-up, and user errors as one line (exit 2).

A job module holds a docstring (its description; the part after `: ` is its one-line summary), an optional
`EPILOG`, `add_arguments(parser)` and `run(args) -> exit code`; `python -m jobs.<stage>` and
`dinocurate <stage>` build the same parser from them. Job modules import the library inside those functions,
so that `dinocurate --help` does not load torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from types import ModuleType

from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.errors import UserError


def setup_logging(level: str = "INFO") -> None:
    """Log lines through tqdm (bars stay intact), with time, level and module."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Faiss's loader says at INFO which SIMD build it tried ("ModuleNotFoundError ... swigfaiss_avx512"):
    # it looks like an error and is none. `make bench` reports the build Faiss runs with.
    logging.getLogger("faiss").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_job(main: Callable[[], int], log_level: str = "INFO", offline: bool = False) -> None:
    """Run a job's main; a `UserError` prints `error: ...` and exits 2, anything else keeps its traceback.
    `offline` (--offline): HF_HUB_OFFLINE=1 for the job, set before anything imports huggingface_hub."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    setup_logging(log_level)
    try:
        with logging_redirect_tqdm():
            code = main()
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(130)
    except UserError as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


def summary(job: ModuleType) -> str:
    """The job's one line for `dinocurate --help`: its docstring's first line, after the command."""
    return job.__doc__.strip().splitlines()[0].partition(": ")[2]


def as_invoked(text: str, prog: str) -> str:
    """Help text with its commands written the way this program was run: `python -m jobs.export_npy` reads
    `dinocurate export-npy` in `dinocurate`'s help, and stays as it is in `python -m jobs.<stage>`'s."""
    if prog.split()[:1] != ["dinocurate"]:
        return text
    return re.sub(r"python -m jobs\.(\w+)", lambda m: f"dinocurate {m[1].replace('_', '-')}", text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written (examples keep their lines), commands as invoked."""

    def _format_text(self, text: str) -> str:  # the description and the epilog
        return super()._format_text(as_invoked(text, self._prog))

    def _get_help_string(self, action: argparse.Action) -> str | None:  # an option's help, before it is wrapped
        return as_invoked(action.help, self._prog) if action.help else action.help


def parser_settings(job: ModuleType) -> dict:
    """What `python -m jobs.<stage> --help` and `dinocurate <stage> --help` share besides the options."""
    return {"description": job.__doc__.strip(), "epilog": getattr(job, "EPILOG", None),
            "formatter_class": HelpFormatter}


def build_parser(job: ModuleType, prog: str | None = None) -> argparse.ArgumentParser:
    """The job's parser; `prog` defaults to `python -m jobs.<stage>`."""
    parser = argparse.ArgumentParser(prog=prog or f"python -m {job.__name__}", **parser_settings(job))
    job.add_arguments(parser)
    return parser


def run_command(name: str, argv: list[str] | None = None) -> None:
    """`python -m jobs.<stage>`: parse, run, exit with the job's code (2 for a user error). `name` is the job
    module's `__spec__.name`, which stays `jobs.<stage>` when it runs as `__main__` (then it is imported once
    more under that name: job modules are light)."""
    job = importlib.import_module(name)
    args = build_parser(job).parse_args(argv)
    run_job(lambda: job.run(args), args.log_level, getattr(args, "offline", False))
