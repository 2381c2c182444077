"""What the bench and parity commands return: the headline figures and paths, the JSON record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchResult:
    """A benchmark: bench.json (written from `record`) and bench.png."""

    path: Path  # bench.json
    plot: Path  # bench.png
    headline: str  # the precision `auto` picks here, its end-to-end speed and ratio to the backbone
    record: dict = field(repr=False)


@dataclass(frozen=True)
class ParityResult:
    """A parity check: every pair's PASS/FAIL in parity.json (written from `record`)."""

    path: Path  # parity.json
    passed: bool  # every pair passed
    rows: list[dict]
    record: dict = field(repr=False)
