"""Review decisions on dedup groups (another keeper, "not a duplicate"): appended by people, applied by export.

`OUT/review/decisions.parquet` is an append-only log, one row per decision, oldest first (docs/FORMAT.md §9).
`make serve` writes it; every reader of the groups applies it through `apply_decisions` (dedup/decided.py), so
a reviewed keeper is exported and listed in place of the one dedup chose. Nothing is ever deleted or moved.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.files import write_parquet_atomic
from pipeline.io.lock import FileLock, LockedError
from pipeline.layout import OutputRoot, read_summary

log = logging.getLogger(__name__)

KEEPER, NOT_DUPLICATE, DUPLICATE = "keeper", "not_duplicate", "duplicate"
ACTIONS = (KEEPER, NOT_DUPLICATE, DUPLICATE)
REVIEWED = "reviewed"  # the reason of a row the review made a duplicate (a keeper replaced, a decision undone)
CONTAMINATED = "contaminated"
DECISION_SCHEMA = pa.schema([
    ("when", pa.string()), ("who", pa.string()), ("action", pa.string()), ("key", pa.string()),
    ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()), ("component", pa.int64()),
])
LOCK_WAIT_SECONDS = 10.0
_write_lock = threading.Lock()  # one writer at a time inside a process; the file lock orders processes


def default_reviewer() -> str:
    """The OS user, as `who` of a decision when no reviewer is named."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_decisions(root: str | os.PathLike) -> pa.Table:
    """Every decision of an output root, oldest first; an empty table when none was made."""
    path = OutputRoot(root).decisions_path
    if not path.exists():
        return DECISION_SCHEMA.empty_table()
    return pq.read_table(path, schema=DECISION_SCHEMA)


def append_decisions(root: str | os.PathLike, rows: list[dict], who: str | None = None) -> pa.Table:
    """Append decisions (`action`, `key`, `shard`, `index`, `id`, `component`), stamped with who and when:
    the log is read, extended and written again atomically, under a thread lock and a file lock, so two
    reviewers (threads of one server, or two servers) never lose each other's rows. Returns the whole log."""
    bad = [r.get("action") for r in rows if r.get("action") not in ACTIONS]
    if bad:
        raise InputError(f"unknown review action {bad[0]!r}: one of {', '.join(ACTIONS)}")
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    who = who or default_reviewer()
    new = pa.Table.from_pylist([{**{f: r.get(f) for f in DECISION_SCHEMA.names}, "when": when, "who": who}
                                for r in rows], schema=DECISION_SCHEMA)
    layout = OutputRoot(root)
    with _write_lock, _holding(FileLock(layout.decisions_lock_path, f"the review log of {layout.root}")):
        table = pa.concat_tables([read_decisions(root), new])
        write_parquet_atomic(table, layout.decisions_path)
    return table


@contextmanager
def _holding(lock: FileLock) -> Iterator[FileLock]:
    """Hold a FileLock, waiting up to LOCK_WAIT_SECONDS for another process to let it go."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            lock.acquire()
            break
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield lock
    finally:
        lock.release()


def review_root(groups_path: str | os.PathLike) -> Path:
    """The output root whose review applies to a groups file: `OUT` for `OUT/dedup/groups.parquet`, else the
    root its dedup summary names."""
    folder = Path(groups_path).resolve().parent
    summary = read_summary(folder) or {}
    named = (summary.get("config") or {}).get("features")
    for candidate in (folder.parent, Path(named) if named else None):
        if candidate is not None and OutputRoot(candidate).features.is_dir():
            return candidate
    return folder.parent


def apply_decisions(groups: pa.Table, decisions: pa.Table) -> pa.Table:
    """The groups table (same schema) with each decision applied in order, later ones winning:
    - `keeper`: the row becomes its component's keeper (reason `keep`); the keeper it replaces becomes a
      duplicate (reason `reviewed`);
    - `not_duplicate`: the row is kept on its own (reason `not_duplicate`); no effect on a keeper;
    - `duplicate`: undoes `not_duplicate` (the row is a duplicate again); no effect on a keeper.
    A decision is matched to its row by (shard, index, key); rows no longer there, and rows of contaminated
    components (decontamination is not reviewed here), are skipped and counted in the log."""
    n = groups.num_rows
    rows = _rows_of(groups, decisions)
    component = groups.column("component").to_numpy()
    order = np.argsort(component, kind="stable")
    by_component = component[order]
    keep = groups.column("keep").to_numpy(zero_copy_only=False).copy()
    original = np.array(groups.column("reason").to_pylist(), dtype=object) if n else np.array([], dtype=object)
    reason = original.copy()
    alone: set[int] = set()
    has_why = "keep_reason" in groups.column_names
    why = groups.column("keep_reason").to_pylist() if has_why else [None] * n
    skipped = {"gone": 0, "contaminated": 0, "keeper": 0}
    for action, who, row in zip(decisions.column("action").to_pylist(), decisions.column("who").to_pylist(), rows):
        if row is None:
            skipped["gone"] += 1
            continue
        if original[row] == CONTAMINATED:
            skipped["contaminated"] += 1
            continue
        is_keeper = keep[row] and row not in alone
        if action == KEEPER:
            lo, hi = np.searchsorted(by_component, component[row], side="left"), \
                np.searchsorted(by_component, component[row], side="right")
            for m in order[lo:hi]:
                if keep[m] and m not in alone and m != row:
                    keep[m], reason[m], why[m] = False, REVIEWED, None
            keep[row], reason[row], why[row] = True, "keep", f"chosen in review by {who}"
            alone.discard(row)
        elif is_keeper:
            skipped["keeper"] += 1
        elif action == NOT_DUPLICATE:
            keep[row], reason[row], why[row] = True, NOT_DUPLICATE, f"not a duplicate, said {who} in review"
            alone.add(row)
        elif action == DUPLICATE and row in alone:
            alone.discard(row)
            keep[row], reason[row] = False, original[row] if original[row] not in ("keep", "unique") else REVIEWED
            why[row] = None
    if any(skipped.values()):
        log.info("review: %d decisions applied, skipped: %s", decisions.num_rows - sum(skipped.values()),
                 {k: v for k, v in skipped.items() if v})
    out = groups.set_column(groups.schema.get_field_index("keep"), "keep", pa.array(keep, pa.bool_()))
    out = out.set_column(out.schema.get_field_index("reason"), "reason", pa.array(reason.tolist(), pa.string()))
    if has_why:
        out = out.set_column(out.schema.get_field_index("keep_reason"), "keep_reason", pa.array(why, pa.string()))
    return out


def _rows_of(groups: pa.Table, decisions: pa.Table) -> list[int | None]:
    """The groups row of each decision (by shard, index and key), None where there is none."""
    if not decisions.num_rows:
        return []
    wanted = pa.table({"shard": decisions.column("shard"), "index": decisions.column("index"),
                       "key": decisions.column("key"), "_decision": np.arange(decisions.num_rows)})
    have = groups.select(["shard", "index", "key"]).append_column("_row", pa.array(np.arange(groups.num_rows)))
    joined = wanted.join(have, keys=["shard", "index", "key"], join_type="inner")
    found = dict(zip(joined.column("_decision").to_pylist(), joined.column("_row").to_pylist()))
    return [found.get(d) for d in range(decisions.num_rows)]
