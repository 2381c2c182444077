"""Every input a user can give ends as a feature row, a failure row or a clear error (issue 12, items 10-12, 17
and "beyond these")."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from webdataset import TarWriter

from pipeline.errors import MissingInputError
from pipeline.extract.runner import run_extract
from tests.conftest import jpeg_bytes, make_image, tiny_config, write_shards


def rows_and_failures(out: Path) -> tuple[dict[str, int], dict[str, str]]:
    feats = {k: i for f in sorted((out / "features").glob("*.parquet"))
             for k, i in zip(*pq.read_table(f, columns=["key", "index"]).to_pydict().values())}
    fails = {r["key"]: r["reason"] for f in sorted((out / "failures").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()}
    return feats, fails


def test_a_truncated_tar_is_counted_as_damaged_and_said_once(tmp_path, caplog):
    shards, _ = write_shards(tmp_path / "s", 1, 6)
    data = Path(shards[0]).read_bytes()
    Path(shards[0]).write_bytes(data[: len(data) // 2 + 100])
    with caplog.at_level(logging.WARNING):
        stats = run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    assert stats.damaged == ["train-000000"] and "1 damaged" in stats.summary()
    said = [r for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(said) == 1 and "@ <" not in said[0].getMessage()
    recorded = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert recorded["damaged"] == 1 and list(recorded["damaged_shards"]) == ["train-000000"]


def test_a_missing_shard_in_a_list_is_left_undone_and_the_others_go_on(tmp_path):
    shards, keys = write_shards(tmp_path / "s", 3, 2)
    Path(shards[1]).unlink()
    listing = tmp_path / "list.txt"
    listing.write_text("# my shards\n\n" + "\n".join(shards) + "\n\n")  # comments and blank lines
    stats = run_extract(tiny_config(tmp_path / "out", shards=(str(listing),)))
    assert stats.failed == ["train-000001"] and stats.written == 2
    assert not (tmp_path / "out" / "_done" / "train-000001.json").exists()
    with pytest.raises(MissingInputError, match="does not exist"):  # a typo: nothing exists at all
        run_extract(tiny_config(tmp_path / "out2", shards=(str(tmp_path / "s" / "nope-000000.tar"),)))


def test_hidden_files_are_left_out_and_counted(tmp_path, caplog):
    folder = tmp_path / "photos"
    (folder / ".thumbnails").mkdir(parents=True)
    make_image(0).save(folder / "a.jpg")
    make_image(1).save(folder / ".b.jpg")
    make_image(2).save(folder / ".thumbnails" / "c.jpg")
    with caplog.at_level(logging.INFO):
        run_extract(tiny_config(tmp_path / "out", images=str(folder)))
    feats, fails = rows_and_failures(tmp_path / "out")
    assert list(feats) == ["a.jpg"] and not fails
    assert any("left out 1 hidden files and 1 hidden folders" in r.getMessage() for r in caplog.records)


def test_the_progress_bar_counts_failures_and_reaches_the_total(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        make_image(i).save(folder / f"ok{i}.jpg")
    for i in range(3):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    run_extract(tiny_config(tmp_path / "out", images=str(folder), progress=True))
    err = capsys.readouterr().err
    assert "5/5" in err and "100%" in err and "fail=3" in err


def test_awkward_images_and_paths(tmp_path):
    folder = tmp_path / "Fotos mit Leerzeichen – été"
    (folder / "sub dir").mkdir(parents=True)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one pixel.png")
    Image.new("RGB", (1, 20000), (10, 200, 10)).save(folder / "sub dir" / "tall.png")
    frames = [make_image(i, (40, 30)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    make_image(5).save(folder / "ünïcödé.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop").symlink_to(folder)  # a folder loop: not followed
    (folder / "linked.jpg").symlink_to(folder / "ünïcödé.jpg")
    out = tmp_path / "new" / "nested out"  # OUT need not exist
    stats = run_extract(tiny_config(out, images=str(folder)))
    feats, fails = rows_and_failures(out)
    assert set(feats) == {"one pixel.png", "sub dir/tall.png", "animated.gif", "ünïcödé.jpg", "linked.jpg"}
    assert fails == {"dangling.jpg": "FileNotFoundError"}
    assert stats.images == 5 and stats.failures == 1


def test_a_file_deleted_between_listing_and_reading_is_a_failure_row(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_image(i).save(folder / f"p{i}.jpg")
    from pipeline.io import samples

    real = samples.iter_folder

    def vanish(shard, *part):
        (folder / "p1.jpg").unlink()
        yield from real(shard, *part)

    monkeypatch.setattr(samples, "iter_folder", vanish)
    run_extract(tiny_config(tmp_path / "out", images=str(folder)))
    feats, fails = rows_and_failures(tmp_path / "out")
    assert set(feats) == {"p0.jpg", "p2.jpg"} and fails == {"p1.jpg": "FileNotFoundError"}


def test_an_empty_tar_and_a_tar_without_images(tmp_path):
    empty = tmp_path / "empty-000000.tar"
    with tarfile.open(empty, "w"):
        pass
    textonly = tmp_path / "text-000000.tar"
    with TarWriter(str(textonly), encoder=False) as sink:
        sink.write({"__key__": "a", "txt": b"caption only"})
        sink.write({"__key__": "b", "jpg": jpeg_bytes(make_image(1)), "txt": b"with image"})
    stats = run_extract(tiny_config(tmp_path / "out", shards=(str(empty), str(textonly))))
    feats, fails = rows_and_failures(tmp_path / "out")
    assert stats.written == 2 and list(feats) == ["b"] and fails == {"a": "NoImage"}
    done = json.loads((tmp_path / "out" / "_done" / "empty-000000.json").read_text())
    assert (done["samples"], done["rows"], done["failures"]) == (0, 0, 0)
