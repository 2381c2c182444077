"""Shared by the job entry points: logging set-up and turning user errors into one clear line."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from tqdm.contrib.logging import logging_redirect_tqdm

# Errors that mean "the request cannot be done as asked": shown as one line, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError)


def run_job(main: Callable[[], int], log_level: str = "INFO") -> None:
    """Run a job's main with logging through tqdm; user errors print `error: ...` and exit 2."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        with logging_redirect_tqdm():
            code = main()
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
