"""Review decisions (pipeline/dedup/decisions.py): applied in order, appended safely, honoured by export and CSV."""

from __future__ import annotations

import csv
import shutil
import tarfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.curate.export import ExportConfig, run_export
from pipeline.dedup.decided import write_duplicates_csv
from pipeline.dedup.decisions import (
    DECISION_SCHEMA,
    append_decisions,
    apply_decisions,
    read_decisions,
    review_root,
)
from pipeline.dedup.groups import GROUP_SCHEMA
from pipeline.errors import InputError
from pipeline.io.lock import FileLock
from pipeline.layout import OutputRoot

ROWS = [  # key, shard, index, component, size, keep, reason
    ("a", "s0", 0, 0, 3, True, "keep"), ("b", "s0", 1, 0, 3, False, "exact"), ("c", "s0", 2, 0, 3, False, "phash"),
    ("d", "s0", 3, 1, 1, True, "unique"),
    ("e", "s1", 0, 2, 2, False, "contaminated"), ("f", "s1", 1, 2, 2, False, "contaminated"),
]


def groups_table() -> pa.Table:
    return pa.table({"key": [r[0] for r in ROWS], "shard": [r[1] for r in ROWS], "index": [r[2] for r in ROWS],
                     "id": list(range(len(ROWS))), "component": [r[3] for r in ROWS],
                     "component_size": [r[4] for r in ROWS], "keep": [r[5] for r in ROWS],
                     "nearest_key": [None] * len(ROWS), "nearest_similarity": [None] * len(ROWS),
                     "reason": [r[6] for r in ROWS]}, schema=GROUP_SCHEMA)


def decisions(*steps: tuple[str, str]) -> pa.Table:
    """(action, key) steps as a decision log; the shard and index are looked up in ROWS ("gone": no such row)."""
    where = {r[0]: (r[1], r[2], r[3]) for r in ROWS} | {"gone": ("s9", 0, 9)}
    return pa.Table.from_pylist([{"when": f"t{i}", "who": "me", "action": action, "key": key, "shard": where[key][0],
                                  "index": where[key][1], "id": 0, "component": where[key][2]}
                                 for i, (action, key) in enumerate(steps)], schema=DECISION_SCHEMA)


def state(table: pa.Table) -> list[tuple[bool, str]]:
    return list(zip(table.column("keep").to_pylist(), table.column("reason").to_pylist()))


def test_decisions_apply_in_order_and_later_ones_win():
    groups = groups_table()
    two = apply_decisions(groups, decisions(("keeper", "b"), ("not_duplicate", "c")))
    assert state(two) == [(False, "reviewed"), (True, "keep"), (True, "not_duplicate"), (True, "unique"),
                          (False, "contaminated"), (False, "contaminated")]
    assert two.schema == GROUP_SCHEMA and two.column("key").to_pylist() == list("abcdef")
    everything = apply_decisions(groups, decisions(
        ("keeper", "b"), ("not_duplicate", "c"), ("keeper", "a"),  # back to a; c stays on its own
        ("duplicate", "c"),  # undone: c is a duplicate again, with its own reason
        ("not_duplicate", "a"),  # the keeper: no effect
        ("keeper", "e"), ("not_duplicate", "f"),  # contaminated: not reviewed here
        ("keeper", "gone")))  # a row no longer there
    assert state(everything) == [(True, "keep"), (False, "reviewed"), (False, "phash"), (True, "unique"),
                                 (False, "contaminated"), (False, "contaminated")]
    assert state(apply_decisions(groups, decisions())) == state(groups)


def test_a_decision_matches_its_row_by_shard_index_and_key():
    renamed = decisions(("keeper", "b")).set_column(3, "key", pa.array(["b-renamed"]))
    assert state(apply_decisions(groups_table(), renamed)) == state(groups_table())


def test_appends_from_many_threads_lose_nothing_and_record_who_and_when(tmp_path):
    def append(t: int) -> None:
        for i in range(10):
            append_decisions(tmp_path, [{"action": "keeper", "key": f"t{t}-{i}", "shard": "s", "index": i, "id": i,
                                         "component": 0}], who=f"thread{t}")

    threads = [threading.Thread(target=append, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = read_decisions(tmp_path)
    assert log.schema == DECISION_SCHEMA and log.num_rows == 40
    assert sorted(log.column("key").to_pylist()) == sorted(f"t{t}-{i}" for t in range(4) for i in range(10))
    for t in range(4):  # each thread's rows in the order it wrote them
        assert [k for k, w in zip(log.column("key").to_pylist(), log.column("who").to_pylist())
                if w == f"thread{t}"] == [f"t{t}-{i}" for i in range(10)]
    assert all(len(w) == 24 and w[10] == "T" for w in log.column("when").to_pylist())  # 2025-03-01T12:00:00+0100
    assert sorted(p.name for p in (tmp_path / "review").iterdir()) == ["decisions.lock", "decisions.parquet"]


def test_an_append_waits_for_another_holder_of_the_file_lock(tmp_path):
    lock = FileLock(OutputRoot(tmp_path).decisions_lock_path, "test").acquire()  # another open file: excludes us
    threading.Timer(0.4, lock.release).start()
    t0 = time.monotonic()
    append_decisions(tmp_path, [{"action": "duplicate", "key": "k", "shard": "s", "index": 0, "id": 0,
                                 "component": 0}], who="later")
    assert time.monotonic() - t0 >= 0.35 and read_decisions(tmp_path).column("who").to_pylist() == ["later"]


def test_an_unknown_action_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="unknown review action 'delete'"):
        append_decisions(tmp_path, [{"action": "delete", "key": "k", "shard": "s", "index": 0}])
    assert not (tmp_path / "review").exists()


def test_duplicates_csv_lists_the_reviewed_keeper(tmp_path):
    root = tmp_path / "out"
    (root / "features").mkdir(parents=True)
    (root / "dedup").mkdir()
    pq.write_table(groups_table(), root / "dedup" / "groups.parquet")
    assert review_root(root / "dedup" / "groups.parquet") == root

    def rows() -> list[tuple[str, str, str]]:
        write_duplicates_csv(root / "dedup" / "groups.parquet", "/photos", root / "duplicates.csv")
        with open(root / "duplicates.csv") as f:
            assert f.readline().startswith("# dinocurate: ")  # what it reflects
            return [(r["duplicate"], r["kept"], r["reason"]) for r in csv.DictReader(f)]

    assert rows() == [("/photos/b", "/photos/a", "exact"), ("/photos/c", "/photos/a", "phash")]
    append_decisions(root, decisions(("keeper", "c"), ("not_duplicate", "b")).select(
        ["action", "key", "shard", "index", "id", "component"]).to_pylist())
    assert rows() == [("/photos/a", "/photos/c", "reviewed")]  # b is kept on its own: not listed


def test_export_writes_the_reviewed_keeper_of_a_group(tar_root, tmp_path):
    """Copies k01 and k04 are one group; dedup keeps k01. After the review makes k04 the keeper, the export holds
    k04 and not k01, both as shards and as a uid list."""
    root = tmp_path / "root"
    shutil.copytree(tar_root, root)
    groups = pq.read_table(root / "dedup" / "groups.parquet").to_pylist()
    pair = sorted(r["key"] for r in groups if r["component_size"] == 2)
    assert pair == ["k01", "k04"] and next(r for r in groups if r["key"] == "k01")["keep"]
    before = run_export(ExportConfig(selection=str(root / "dedup" / "groups.parquet"), out=str(tmp_path / "e0"),
                                     progress=False))
    k04 = next(r for r in groups if r["key"] == "k04")
    append_decisions(root, [{"action": "keeper", **{f: k04[f] for f in ("key", "shard", "index", "id", "component")}}],
                     who="reviewer")
    after = run_export(ExportConfig(selection=str(root / "dedup" / "groups.parquet"), out=str(tmp_path / "e1"),
                                    progress=False))
    assert before.record["samples"] == after.record["samples"] == 7
    keys = {}
    for name in ("e0", "e1"):
        with tarfile.open(tmp_path / name / "export-000000.tar") as tar:
            keys[name] = sorted({member.split(".")[0] for member in tar.getnames()})
    assert "k01" in keys["e0"] and "k04" not in keys["e0"]
    assert "k04" in keys["e1"] and "k01" not in keys["e1"]
    uids = run_export(ExportConfig(selection=str(root / "dedup" / "groups.parquet"), out=str(tmp_path / "u"),
                                   format="uids", progress=False))
    assert uids.record["samples"] == 7 and "k04" in (tmp_path / "u" / "keys.txt").read_text().split()
