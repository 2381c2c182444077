"""The review the server offers: dedup groups with the decisions applied and curate selections, paged.

Decisions are written through `pipeline.dedup.decided.record_decisions` (append only, then duplicates.csv is
brought up to date: nothing is deleted or moved)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dedup.decided import decided_groups, record_decisions
from pipeline.dedup.decisions import (
    CONTAMINATED,
    DUPLICATE,
    KEEPER,
    NOT_DUPLICATE,
    read_decisions,
)
from pipeline.layout import SELECTED, OutputRoot
from pipeline.serve.errors import ServeError


class ReviewError(ServeError):
    """A review request that cannot be done (no groups, no such member, a decision that changes nothing)."""


@dataclass
class GroupsView:
    """The rows of components with more than one member, decisions applied, biggest component first."""

    table: pa.Table  # rows in page order: by component (size descending), keeper first, then by key
    starts: np.ndarray  # first row of each component, in page order; `stops` its end
    stops: np.ndarray
    by_component: dict[int, int]  # component → its position in page order
    by_id: dict[int, int]  # groups id → row
    last: dict[tuple[str, int, str], dict]  # (shard, index, key) → the latest decision on it

    @property
    def count(self) -> int:
        return len(self.starts)


def _mtime(path: os.PathLike) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


class Review:
    """Dedup groups and the curate selection of one output root, re-read when their files change."""

    def __init__(self, root: str | os.PathLike, reviewer: str | None = None) -> None:
        self.layout, self.reviewer = OutputRoot(root), reviewer
        self.groups_path = self.layout.groups_path
        self.selected_path = self.layout.curate_dir / SELECTED
        self.lock = threading.Lock()
        self.view: GroupsView | None = None
        self.view_stamp: tuple | None = None
        self.selected: pa.Table | None = None
        self.selected_stamp: int | None = None

    # ------------------------------------------------------------------ dedup groups
    def groups(self) -> GroupsView:
        """The current view (ReviewError 404 when the root has no dedup groups)."""
        stamp = (_mtime(self.groups_path), _mtime(self.layout.decisions_path))
        with self.lock:
            if stamp[0] is None:
                raise ReviewError(404, "this output root has no dedup groups: run make dedup FEATURES=... first")
            if self.view is None or stamp != self.view_stamp:
                self.view, self.view_stamp = self._read_groups(), stamp
            return self.view

    def _read_groups(self) -> GroupsView:
        # the same derivation as duplicates.csv, export, the report
        table, decisions = decided_groups(self.groups_path)
        grouped = table.filter(pc.greater(table.column("component_size"), 1))
        alone = pc.equal(grouped.column("reason"), NOT_DUPLICATE)
        keeper = pc.and_(grouped.column("keep"), pc.invert(alone))
        grouped = grouped.append_column("keeper", keeper)
        grouped = grouped.sort_by([("component_size", "descending"), ("component", "ascending"),
                                   ("keeper", "descending"), ("key", "ascending")])
        component = grouped.column("component").to_numpy()
        cuts = np.flatnonzero(np.diff(component)) + 1 if len(component) else np.zeros(0, np.int64)
        starts = np.concatenate([[0], cuts]).astype(np.int64) if len(component) else cuts
        stops = np.concatenate([cuts, [len(component)]]).astype(np.int64) if len(component) else cuts
        last = {(d["shard"], d["index"], d["key"]): d for d in decisions.to_pylist()}
        return GroupsView(grouped, starts, stops, {int(component[s]): i for i, s in enumerate(starts.tolist())},
                          {int(i): r for r, i in enumerate(grouped.column("id").to_pylist())}, last)

    def groups_page(self, page: int, per_page: int) -> tuple[list[dict], int]:
        """(groups of page `page` (0-based), number of groups)."""
        view = self.groups()
        first = page * per_page
        return [self._group_at(view, i) for i in range(first, min(first + per_page, view.count))], view.count

    def group(self, component: int) -> dict:
        view = self.groups()
        if component not in view.by_component:
            raise ReviewError(404, f"there is no duplicate group {component}")
        return self._group_at(view, view.by_component[component])

    def _group_at(self, view: GroupsView, i: int) -> dict:
        start, stop = int(view.starts[i]), int(view.stops[i])
        rows = view.table.slice(start, stop - start).to_pylist()
        members = [{"id": r["id"], "key": r["key"], "shard": r["shard"], "index": r["index"], "keep": r["keep"],
                    "keeper": r["keeper"], "reason": r["reason"], "keep_reason": r.get("keep_reason"),
                    "nearest_key": r["nearest_key"],
                    "nearest_similarity": r["nearest_similarity"],
                    "decision": _public(view.last.get((r["shard"], r["index"], r["key"])))} for r in rows]
        return {"component": rows[0]["component"], "size": rows[0]["component_size"],
                "contaminated": rows[0]["reason"] == CONTAMINATED, "members": members}

    def decide(self, action: str, id_: int) -> dict:
        """Record a decision on the group member with groups id `id_`; returns its group as it is now.
        Refused (409) when it would change nothing or cannot apply: a keeper made keeper again, "not a
        duplicate" on the keeper, undoing what was never marked, any decision in a contaminated group."""
        if action not in (KEEPER, NOT_DUPLICATE, DUPLICATE):
            raise ReviewError(400, f"action must be one of {KEEPER}, {NOT_DUPLICATE}, {DUPLICATE}")
        view = self.groups()
        if id_ not in view.by_id:
            raise ReviewError(404, f"id {id_} is in no duplicate group")
        row = view.table.slice(view.by_id[id_], 1).to_pylist()[0]
        if row["reason"] == CONTAMINATED:
            raise ReviewError(409, "a contaminated group is not reviewed here: it touches the reference set")
        if action == KEEPER and row["keeper"]:
            raise ReviewError(409, f"{row['key']} is the keeper already")
        if action == NOT_DUPLICATE and row["keeper"]:
            raise ReviewError(409, f"{row['key']} is the keeper: make another image the keeper first")
        if action == NOT_DUPLICATE and row["reason"] == NOT_DUPLICATE:
            raise ReviewError(409, f"{row['key']} is marked as not a duplicate already")
        if action == DUPLICATE and row["reason"] != NOT_DUPLICATE:
            raise ReviewError(409, f"{row['key']} is not marked as not a duplicate: nothing to undo")
        record_decisions(self.layout.root, [{"action": action, "key": row["key"], "shard": row["shard"],
                                             "index": row["index"], "id": row["id"], "component": row["component"]}],
                         who=self.reviewer)
        with self.lock:
            self.view = None
        return self.group(row["component"])

    def decisions(self, page: int, per_page: int) -> tuple[list[dict], int]:
        """The decisions, newest first, paged."""
        table = read_decisions(self.layout.root)
        n = table.num_rows
        stop, start = max(0, n - page * per_page), max(0, n - (page + 1) * per_page)
        return [_public(d) for d in reversed(table.slice(start, stop - start).to_pylist())], n

    # ------------------------------------------------------------------ curate selection
    def selection_page(self, page: int, per_page: int, source: str | None = None) -> tuple[list[dict], int, list]:
        """(rows of page `page`, rows in all (of `source`, when given), the selection's sources)."""
        stamp = _mtime(self.selected_path)
        if stamp is None:
            raise ReviewError(404, "this output root has no curate selection: run make curate first")
        with self.lock:
            if self.selected is None or stamp != self.selected_stamp:
                self.selected, self.selected_stamp = pq.read_table(self.selected_path), stamp
            table = self.selected
        sources = sorted(set(table.column("source").to_pylist()))
        if source is not None:
            table = table.filter(pc.equal(table.column("source"), source))
        return table.slice(page * per_page, per_page).to_pylist(), table.num_rows, sources


def _public(decision: dict | None) -> dict | None:
    return None if decision is None else {k: decision[k] for k in ("when", "who", "action", "key", "id")}
