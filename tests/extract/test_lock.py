"""One OUT, one run per rank: an exclusive lock, an atomic claim, a replaceable empty claim, and repair of a
mixed root (issue 12, items 2 and 3)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.errors import ConfigMismatchError, InputError
from pipeline.extract.runner import run_extract
from pipeline.io.lock import LockedError
from pipeline.layout import OutputRoot
from pipeline.roots.features import open_features
from tests.conftest import listing, tiny_config, write_shards

REPO = Path(__file__).resolve().parents[2]


def test_a_second_run_of_the_same_rank_is_refused_naming_the_holder(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline.layout import OutputRoot; "
         f"l = OutputRoot({str(out)!r}).lock(0).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"in use by another run \(pid {holder.pid} on "):
            run_extract(tiny_config(out, shards=tuple(shards)))
        assert not (out / "config.json").exists() and not (out / "features").exists()
        os.kill(holder.pid, signal.SIGKILL)  # the lock dies with its process: no stale lock to clean up
        holder.wait(10)
        stats = run_extract(tiny_config(out, shards=tuple(shards)))
        assert stats.written == 1
    finally:
        holder.kill()


def test_other_ranks_run_beside_each_other(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 2, 2)
    out = tmp_path / "out"
    with OutputRoot(out).lock(1):  # rank 1 is busy; rank 0 still runs
        run_extract(tiny_config(out, shards=tuple(shards), rank=0, world_size=2))
    run_extract(tiny_config(out, shards=tuple(shards), rank=1, world_size=2))
    assert sorted(open_features(out).files[i].stem for i in range(2)) == ["train-000000", "train-000001"]


def _claim(root: str, rank: int, fp: str, barrier, results) -> None:
    with OutputRoot(root).lock(rank):  # as run_extract holds it while it claims and runs
        barrier.wait()
        try:
            OutputRoot(root).claim({"fingerprint": fp, "model": fp}, {}, rank)
            results.put(fp)
        except ConfigMismatchError:
            results.put("refused")
        barrier.wait()  # both runs are still running when the other claims


def test_racing_claims_with_different_settings_never_both_win(tmp_path):
    ctx = mp.get_context("fork")
    for attempt in range(8):
        root = tmp_path / f"out{attempt}"
        root.mkdir()
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_claim, args=(str(root), rank, fp, barrier, results))
                 for rank, fp in ((0, "a"), (1, "b"))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(20)
        outcome = sorted(results.get(timeout=5) for _ in procs)
        assert outcome in (["a", "refused"], ["b", "refused"]), f"attempt {attempt}: {outcome}"
        written = json.loads((root / "config.json").read_text())["provenance"]["fingerprint"]
        assert written == next(o for o in outcome if o != "refused")


def test_a_failed_first_run_does_not_bind_the_root(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 2)
    out = tmp_path / "out"
    first = tiny_config(out, shards=tuple(shards), crash_after_shards=0)
    OutputRoot(out).claim({"fingerprint": "from-a-failed-run", "model": "x"}, {})  # claimed, nothing done
    stats = run_extract(replace(first, crash_after_shards=None, resolution=42))
    assert stats.written == 1
    record = json.loads((out / "config.json").read_text())
    assert record["provenance"]["input_size"] == [3, 42, 42]


def test_a_mixed_root_is_refused_with_the_fix_and_repaired(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 4, 2)
    out = tmp_path / "out"
    run_extract(tiny_config(out, shards=tuple(shards[:2])))
    (out / "config.json").unlink()  # what a lost race used to leave: shards of two settings in one root
    run_extract(tiny_config(out, shards=tuple(shards[2:]), resolution=42))
    (out / "config.json").unlink()
    run_extract(tiny_config(out, shards=tuple(shards[:1])))  # re-claims with the first settings
    with pytest.raises(ConfigMismatchError, match="--repair"):
        run_extract(tiny_config(out, shards=tuple(shards)))
    assert OutputRoot(out).foreign_shards() == ["train-000002", "train-000003"]
    stats = run_extract(tiny_config(out, shards=tuple(shards), repair=True))
    assert (stats.skipped, stats.written) == (2, 2)
    fs = open_features(out)  # one provenance again
    assert fs.count == len(keys) and fs.provenance["input_size"] == [3, 56, 56]


def test_out_that_is_a_file_or_read_only_is_one_clear_error(tmp_path, monkeypatch):
    shards, _ = write_shards(tmp_path / "shards", 1, 1)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_extract(tiny_config(tmp_path / "afile", shards=tuple(shards)))
    with pytest.raises(InputError, match="cannot create the output folder"):
        run_extract(tiny_config(tmp_path / "afile" / "below", shards=tuple(shards)))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root writes through permission bits: make the check see a read-only mount
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    with pytest.raises(InputError, match="not writable"):
        run_extract(tiny_config(ro, shards=tuple(shards)))


def test_lock_files_record_no_holder_after_a_clean_exit(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 1)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    lock = tmp_path / "out" / "_locks" / "rank-0.lock"
    assert lock.exists() and lock.read_text() == ""
    time.sleep(0)


def test_every_writer_says_in_one_line_when_the_location_cannot_be_written(tmp_path):
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.io.files import write_json_atomic

    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match=r"cannot write .*afile/index/index.faiss: .*afile is a file\); choose"):
        shards, _ = write_shards(tmp_path / "s", 1, 2)
        run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
        build_index(IndexConfig(features=str(tmp_path / "out"), out=str(tmp_path / "afile" / "index"),
                                progress=False))
    with pytest.raises(InputError, match="afile is a file"):
        write_json_atomic({}, tmp_path / "afile" / "x.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "out", "s"]  # no temporary left behind


def test_a_run_that_fails_before_writing_anything_leaves_no_locks_folder(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 1)
    out = tmp_path / "out"
    with pytest.raises(Exception, match="vit_nonexistent_model"):
        run_extract(tiny_config(out, shards=tuple(shards), model="vit_nonexistent_model"))
    assert out.is_dir() and listing(out) == []
    # another rank's lock file stays, and so does its folder
    (out / "_locks").mkdir()
    (out / "_locks" / "rank-1.lock").write_text("")
    with pytest.raises(Exception, match="vit_nonexistent_model"):
        run_extract(tiny_config(out, shards=tuple(shards), model="vit_nonexistent_model"))
    assert listing(out / "_locks") == ["rank-1.lock"]
    # a root that holds work keeps its lock file after a failed run
    run_extract(tiny_config(tmp_path / "done", shards=tuple(shards)))
    with pytest.raises(Exception, match="vit_nonexistent_model"):
        run_extract(tiny_config(tmp_path / "done", shards=tuple(shards), model="vit_nonexistent_model"))
    assert (tmp_path / "done" / "_locks" / "rank-0.lock").exists()


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch):
    """A failing holder removes the lock file just after we opened it: we must lock the file now at the path,
    not the removed one (else a third run would lock a new file beside us)."""
    from pipeline.io import lock as lock_module

    path = tmp_path / "_locks" / "rank-0.lock"
    real_flock, calls = lock_module.fcntl.flock, []

    def flock(fd, op):
        if op & lock_module.fcntl.LOCK_EX and not calls:
            calls.append(fd)
            path.unlink()  # as the failing holder does, between our open and our lock
        return real_flock(fd, op)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    with lock_module.FileLock(path, "b"):
        assert calls and lock_module.is_locked(path)  # the file at the path is the one held
