"""`dinocurate apply` as a user runs it: the dry run's lines, --yes, one-line errors, and the whole path from
`make dedup IMAGES=` (a real extract with a tiny random-weight ViT) to apply and undo."""

from __future__ import annotations

import pytest

from jobs import cli
from tests.apply.conftest import DUPLICATES, snapshot
from tests.apply.test_run import dup_bytes
from tests.conftest import TINY_CLI_ARGS, folder_with_copies
from tests.conftest import run_module as run

EXTRACT_ARGS = TINY_CLI_ARGS


def main_exit(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return exit_.value.code


def test_the_dry_run_prints_the_plan_and_the_bytes_and_needs_yes(collection, capsys):
    before = snapshot(collection.folder)
    assert main_exit(["apply", "--out", str(collection.out), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"apply (dry run): would move 3 duplicates (0 of them contaminated) from "
                          f"{collection.folder} to {collection.quarantine}, freeing {dup_bytes():,} bytes")
    assert f"  {collection.folder / DUPLICATES[0]} -> {collection.quarantine / DUPLICATES[0]}" in out
    assert "nothing was changed: add --yes to act" in out
    assert snapshot(collection.folder) == before and not collection.quarantine.exists()

    assert main_exit(["apply", "--out", str(collection.out), "--no-progress", "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"apply: moved 3 duplicates (0 of them contaminated) from {collection.folder} to "
                          f"{collection.quarantine}, freed {dup_bytes():,} bytes")
    manifest = next((collection.out / "apply").glob("manifest-*.parquet"))
    assert f"undo: dinocurate apply --undo {manifest}" in out
    assert main_exit(["apply", "--out", str(collection.out), "--no-progress", "--yes"]) == 0
    assert "3 already moved by an earlier apply" in capsys.readouterr().out
    assert main_exit(["apply", "--undo", str(manifest), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"apply --undo: restored 3 files to {collection.folder}")
    assert snapshot(collection.folder) == before


def test_user_mistakes_are_one_line_and_exit_2(collection, tmp_path, capsys):
    cases = [(["--out", str(collection.out), "--move-to", str(collection.folder / "dupes")], "inside the collection"),
             (["--undo", str(tmp_path / "m.parquet")], "not found"),
             (["--out", str(tmp_path)], "no dedup result"),
             (["--out", str(collection.out), "--undo", "m.parquet"], "--undo takes a manifest alone")]
    for argv, message in cases:
        assert main_exit(["apply", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err



def test_from_make_dedup_images_to_apply_and_undo(tmp_path):
    photos = tmp_path / "photos"
    folder_with_copies(photos, 3)  # a.png, trip/a_copy.png (byte-identical), trip/a_mirror.png
    before = snapshot(photos)
    out = tmp_path / "out"
    run("jobs.dedup", "--images", str(photos), "--out", str(out), *EXTRACT_ARGS)
    proc = run("jobs.cli", "apply", "--out", str(out), "--yes", "--no-progress")
    assert proc.stdout.startswith("apply: moved 2 duplicates")
    quarantine = tmp_path / "photos.duplicates"
    assert sorted(snapshot(quarantine)[0]) == ["trip/a_copy.png", "trip/a_mirror.png"]
    assert sorted(snapshot(photos)[0]) == ["a.png", "other0.png", "other1.png", "other2.png"]
    manifest = next((out / "apply").glob("manifest-*.parquet"))
    run("jobs.apply", "--undo", str(manifest), "--no-progress")
    assert snapshot(photos) == before and not quarantine.exists()
