"""What the evaluate stage returns: the runs, the table and the path, results.json's record in `record`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalResult:
    """An evaluation: results.json (one feature root) or compare.json (several), written from `record`."""

    path: Path  # results.json or compare.json
    runs: list[dict]  # per feature root and kind: knn.by_k[].top1/top5, linear.top1/top5
    text: str  # the side-by-side table the CLI prints
    protocol_fingerprint: str
    record: dict = field(repr=False)
