"""What a dedup decided, derived one way for every reader: groups.parquet with the review applied, duplicates.csv.

`duplicates.csv`, `make export`, the report and `make serve` all read `decided_groups`; the CSV is rewritten
whenever the groups (make dedup) or the decisions (make serve) change, and its first line names what it reflects.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.decisions import NOT_DUPLICATE, append_decisions, apply_decisions, read_decisions, review_root
from pipeline.io.files import write_text_atomic
from pipeline.layout import OutputRoot

log = logging.getLogger(__name__)

CSV_COLUMNS = ["duplicate", "kept", "reason", "nearest_similarity", "group_size", "keep_reason"]


def decided_groups(groups_path: str | os.PathLike) -> tuple[pa.Table, pa.Table]:
    """groups.parquet with the review decisions of its root applied, and those decisions (oldest first)."""
    groups = pq.read_table(groups_path)
    decisions = read_decisions(review_root(groups_path))
    return (apply_decisions(groups, decisions) if decisions.num_rows else groups), decisions


def duplicates_of_keepers(rows: list[dict]) -> tuple[list[dict], dict[int, dict]]:
    """(the duplicates, component → its keeper's row) of decided groups rows: a duplicate is a row not kept in a
    component that has a keeper (a row marked not a duplicate is kept alone and keeps no other row).
    Contaminated components have no keeper: their rows are not among these."""
    keeper = {r["component"]: r for r in rows if r["keep"] and r["reason"] != NOT_DUPLICATE}
    return [r for r in rows if not r["keep"] and r["component"] in keeper], keeper


def removals(table: pa.Table) -> list[tuple[dict, dict]]:
    """(duplicate row, its keeper's row) of every decided duplicate, sorted by keeper then key."""
    duplicates, keeper = duplicates_of_keepers(table.to_pylist())
    out = [(r, keeper[r["component"]]) for r in duplicates]
    out.sort(key=lambda pair: (pair[1]["key"], pair[0]["key"]))
    return out


def write_duplicates_csv(groups: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike) -> int:
    """`duplicates.csv`: each duplicate file → the file kept in its group (paths under `folder`), with why the
    keeper won; never touches the files themselves. Returns the number of rows."""
    table, log = decided_groups(groups)
    decisions = log.num_rows
    pairs = removals(table)
    folder = Path(folder)
    text = io.StringIO()
    text.write(f"# dinocurate: {Path(groups).resolve()} with {decisions} review decision"
               f"{'' if decisions == 1 else 's'} applied; rewritten when either changes\n")
    w = csv.writer(text)
    w.writerow(CSV_COLUMNS)
    for r, k in pairs:
        w.writerow([str(folder / r["key"]), str(folder / k["key"]), r["reason"],
                    f"{r['nearest_similarity']:.4f}" if r["nearest_similarity"] is not None else "",
                    r["component_size"], k.get("keep_reason") or ""])
    write_text_atomic(text.getvalue(), out)
    return len(pairs)


def refresh_duplicates_csv(root: str | os.PathLike) -> int | None:
    """Rewrite `duplicates.csv` of a root extracted from an image folder from its current groups and decisions;
    returns the rows listed, None (nothing written) for roots of shards or without dedup groups."""
    layout = OutputRoot(root)
    record = layout.read_config() or {}
    folder = (record.get("config") or {}).get("images")
    if not folder or not layout.groups_path.is_file():
        return None
    n = write_duplicates_csv(layout.groups_path, folder, layout.duplicates_csv_path)
    log.info("dedup: %s lists %d duplicate%s", layout.duplicates_csv_path, n, "" if n == 1 else "s")
    return n


def record_decisions(root: str | os.PathLike, rows: list[dict], who: str | None = None) -> pa.Table:
    """Append review decisions (decisions.append_decisions), then bring duplicates.csv up to date."""
    table = append_decisions(root, rows, who)
    refresh_duplicates_csv(root)
    return table
