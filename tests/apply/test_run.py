"""apply on a deduped folder: dry run, move and undo bit for bit, changed files, second runs, link mode, errors."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from pipeline.apply.config import ApplyConfig
from pipeline.apply.manifest import read_manifest
from pipeline.apply.run import CHANGED, MISSING, TAKEN, run_apply
from pipeline.dedup.decisions import append_decisions
from pipeline.errors import ConfigError, InputError, MissingInputError
from pipeline.layout import OutputRoot
from tests.apply.conftest import DUPLICATES, FILES, KEEPERS, content, make_collection, snapshot


def apply(c, **kw):
    return run_apply(ApplyConfig(out=str(c.out), progress=False, **kw))


def undo(manifest):
    return run_apply(ApplyConfig(undo=str(manifest), progress=False))


def dup_bytes(keys=DUPLICATES) -> int:
    return sum(len(content(FILES[k])) for k in keys)


def test_dry_run_changes_nothing_and_counts_the_bytes_freed(collection):
    before = snapshot(collection.folder)
    r = apply(collection)
    assert r.dry_run and r.done == 3 and r.bytes == dup_bytes() and r.manifest is None
    assert [src for src, _ in r.examples] == [str(collection.folder / k) for k in DUPLICATES]
    assert [dst for _, dst in r.examples] == [str(collection.quarantine / k) for k in DUPLICATES]
    assert snapshot(collection.folder) == before
    assert not collection.quarantine.exists() and not OutputRoot(collection.out).apply_dir.exists()


def test_move_then_undo_puts_every_file_back_bit_identical(collection):
    before = snapshot(collection.folder)
    r = apply(collection, yes=True)
    assert (r.done, r.bytes, r.skipped, r.failed) == (3, dup_bytes(), (), ())
    for k in DUPLICATES:  # mirrored under the quarantine beside the collection, bytes unchanged
        assert not (collection.folder / k).exists()
        assert (collection.quarantine / k).read_bytes() == content(FILES[k])
    assert sorted(snapshot(collection.folder)[0]) == sorted(KEEPERS)
    rows, meta = read_manifest(r.manifest)
    assert meta["mode"] == "move" and meta["folder"] == str(collection.folder.resolve())
    assert [(row["key"], row["status"], row["detail"]) for row in rows] == [(k, "done", "renamed") for k in DUPLICATES]
    assert {row["key"]: row["keeper"] for row in rows} == {
        "b2.png": str(collection.folder / "b.png"), "trip/a_copy.jpg": str(collection.folder / "a.jpg"),
        "trip/deep/a_copy2.jpg": str(collection.folder / "a.jpg")}
    assert pq.read_schema(r.manifest).field("sha1").type.byte_width == 20

    u = undo(r.manifest)
    assert (u.mode, u.done, u.bytes, u.failed) == ("undo", 3, dup_bytes(), ())
    assert snapshot(collection.folder) == before  # every byte and every folder
    assert not collection.quarantine.exists()  # emptied folders pruned
    assert {row["status"] for row in read_manifest(r.manifest)[0]} == {"restored"}
    again = undo(r.manifest)  # undoing twice changes nothing
    assert (again.done, again.failed) == (0, ()) and snapshot(collection.folder) == before


def test_a_second_apply_reports_the_files_already_moved(collection):
    first = apply(collection, yes=True)
    second = apply(collection, yes=True)
    assert (second.done, second.already, second.skipped, second.failed, second.manifest) == (3 - 3, 3, (), (), None)
    assert len(list(OutputRoot(collection.out).apply_dir.glob("manifest-*.parquet"))) == 1
    undo(first.manifest)
    third = apply(collection)  # after the undo the files are there again: planned anew
    assert (third.done, third.already) == (3, 0)


def test_a_changed_or_missing_file_is_skipped_and_listed_never_moved(collection):
    changed, gone = collection.folder / "trip/a_copy.jpg", collection.folder / "b2.png"
    changed.write_bytes(b"edited after the dedup")
    gone.unlink()
    dry = apply(collection)
    assert dry.skipped == ((str(gone), MISSING), (str(changed), CHANGED)) and dry.done == 1
    r = apply(collection, yes=True)
    assert r.skipped == ((str(gone), MISSING), (str(changed), CHANGED)) and r.done == 1
    assert changed.read_bytes() == b"edited after the dedup"
    assert not (collection.quarantine / "trip/a_copy.jpg").exists()
    assert (collection.quarantine / "trip/deep/a_copy2.jpg").exists()
    statuses = {row["key"]: (row["status"], row["detail"]) for row in read_manifest(r.manifest)[0]}
    assert statuses["trip/a_copy.jpg"] == ("skipped", CHANGED) and statuses["b2.png"] == ("skipped", MISSING)
    undo(r.manifest)
    assert changed.read_bytes() == b"edited after the dedup"  # a skipped file is never touched by the undo


def test_an_existing_file_at_the_destination_is_never_overwritten(collection):
    taken = collection.quarantine / "b2.png"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"someone else's")
    r = apply(collection, yes=True)
    assert r.skipped == ((str(collection.folder / "b2.png"), TAKEN),) and r.done == 2
    assert taken.read_bytes() == b"someone else's" and (collection.folder / "b2.png").exists()
    undo(r.manifest)
    assert taken.read_bytes() == b"someone else's"  # the undo leaves a file it did not move


def test_review_decisions_are_applied_first(collection):
    """A reviewed keeper stays and the keeper it replaced moves; a row marked not a duplicate stays."""
    groups = pq.read_table(collection.out / "dedup" / "groups.parquet").to_pylist()
    row = {r["key"]: r for r in groups}
    append_decisions(collection.out, [{**row["trip/a_copy.jpg"], "action": "keeper"},
                                      {**row["b2.png"], "action": "not_duplicate"}], who="test")
    r = apply(collection)
    assert [src for src, _ in r.examples] == [str(collection.folder / k) for k in ("a.jpg", "trip/deep/a_copy2.jpg")]


def test_contaminated_images_are_moved_too(tmp_path):
    """Decontamination against an evaluation set removes every image of a touched component: they go too."""
    ref = make_collection(tmp_path / "ref")  # holds c.jpg's exact bytes
    c = make_collection(tmp_path / "pool", reference=ref.out)
    r = apply(c, yes=True)
    moved = sorted(os.path.relpath(src, c.folder) for src, _ in r.examples)
    assert r.contaminated >= 1 and "c.jpg" in moved and not (c.folder / "c.jpg").exists()
    rows = {row["key"]: row for row in read_manifest(r.manifest)[0]}
    assert rows["c.jpg"]["reason"] == "contaminated" and rows["c.jpg"]["keeper"] is None


def test_link_keepers_links_every_kept_image_and_leaves_the_collection(collection, tmp_path):
    before = snapshot(collection.folder)
    target = tmp_path / "deduped"
    r = apply(collection, link_keepers=str(target), yes=True)
    assert (r.mode, r.done) == ("link", len(KEEPERS)) and snapshot(collection.folder) == before
    assert sorted(snapshot(target)[0]) == sorted(KEEPERS)
    assert all(os.path.samefile(target / k, collection.folder / k) for k in KEEPERS)  # hard links
    u = undo(r.manifest)
    assert u.done == len(KEEPERS) and not target.exists() and snapshot(collection.folder) == before


@pytest.mark.parametrize("where", ["photos", "photos/trip", "."])
def test_a_target_inside_or_around_the_collection_is_refused(collection, where):
    with pytest.raises(ConfigError, match="collection"):
        apply(collection, move_to=str(collection.folder.parent / where))


def test_one_line_errors_for_what_cannot_be_applied(tmp_path, collection):
    with pytest.raises(MissingInputError, match="run make dedup"):
        (collection.out / "dedup" / "groups.parquet").rename(tmp_path / "g.parquet")
        apply(collection)
    (tmp_path / "g.parquet").rename(collection.out / "dedup" / "groups.parquet")
    with pytest.raises(MissingInputError, match="manifest .* not found"):
        undo(tmp_path / "nope.parquet")
    with pytest.raises(MissingInputError, match="does not exist"):
        run_apply(ApplyConfig(out=str(tmp_path / "no-root")))
    collection.folder.rename(tmp_path / "moved-away")
    with pytest.raises(MissingInputError, match="image folder .* does not exist"):
        apply(collection)


def test_a_root_of_shards_is_refused(tmp_path, collection):
    cfg = OutputRoot(collection.out).config_path
    cfg.write_text(cfg.read_text().replace('"images"', '"images_"').replace('"shards": []',
                                                                          '"shards": ["/d/train-000000.tar"]'))
    with pytest.raises(InputError, match="shards.*make export"):
        apply(collection)
