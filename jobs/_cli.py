"""Shared by the job entry points: logging set-up, and user errors as one line (exit 2), bugs as tracebacks."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.errors import UserError


def setup_logging(level: str = "INFO") -> None:
    """Log lines through tqdm (bars stay intact), with time, level and module."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_job(main: Callable[[], int], log_level: str = "INFO") -> None:
    """Run a job's main; a `UserError` prints `error: ...` and exits 2, anything else keeps its traceback."""
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
