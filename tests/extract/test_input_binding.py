"""One answer per OUT (issue 25, item 2): a unit is bound to the input it came from; a grown folder is redone
with its reason, and `index --update` after it says what to run."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError, UserError
from pipeline.extract.runner import run_extract
from pipeline.layout import OutputRoot
from tests.conftest import make_image, tiny_config, write_shards


def photo_folder(root: Path, names: list[str], seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        make_image(i, seed=seed).save(root / name, format="JPEG")
    return root


def keys(out: Path, shard: str) -> list[str]:
    return pq.read_table(out / "features" / f"{shard}.parquet", columns=["key"]).column("key").to_pylist()


def test_a_second_folder_into_one_out_is_refused_naming_both(tmp_path):
    """Bug 2: IMAGES=A then IMAGES=B into one OUT replaced A's folder-000000 with B's rows, the log saying
    '0 already done, 1 to do' and config.json still naming A."""
    a = photo_folder(tmp_path / "A", ["a0.jpg", "a1.jpg", "a2.jpg"])
    b = photo_folder(tmp_path / "B", ["b0.jpg", "b1.jpg"], seed=1)
    out = tmp_path / "o"
    run_extract(tiny_config(out, images=str(a)))
    before = keys(out, "folder-000000")
    with pytest.raises(InputError) as err:
        run_extract(tiny_config(out, images=str(b)))
    message = str(err.value)
    assert "\n" not in message
    assert f"the image folder {a}" in message and f"not of the image folder {b}" in message
    assert "Use another OUT" in message
    assert keys(out, "folder-000000") == before == ["a0.jpg", "a1.jpg", "a2.jpg"]  # A's rows stay
    assert OutputRoot(out).input_config()["images"] == str(a)
    assert OutputRoot(out).read_marker("folder-000000")["origin"] == {"input": str(a), "stamp": None}


def test_the_same_folder_by_another_spelling_resumes(tmp_path):
    """The same folder through a symlink or a trailing slash is the same input: resumed, not refused."""
    a = photo_folder(tmp_path / "A", ["a0.jpg", "a1.jpg"])
    link = tmp_path / "link"
    link.symlink_to(a)
    out = tmp_path / "o"
    run_extract(tiny_config(out, images=str(a)))
    assert run_extract(tiny_config(out, images=str(link) + "/")).skipped == 1


def test_shards_into_one_out_as_images_is_refused(tmp_path):
    a = photo_folder(tmp_path / "A", ["a0.jpg"])
    shards, _ = write_shards(tmp_path / "shards", 1, 2)
    out = tmp_path / "o"
    run_extract(tiny_config(out, images=str(a)))
    with pytest.raises(InputError, match=r"holds the features of the image folder .*A, not of shards: one OUT"):
        run_extract(tiny_config(out, shards=tuple(shards)))


def test_a_shard_of_the_same_name_from_elsewhere_is_refused(tmp_path):
    """SHARDS=a.tar then SHARDS=other/a.tar into one OUT: never mixed or replaced."""
    first, _ = write_shards(tmp_path / "one", 1, 3)
    second, _ = write_shards(tmp_path / "other", 1, 2, start=50)
    out = tmp_path / "o"
    run_extract(tiny_config(out, shards=tuple(first)))
    before = keys(out, "train-000000")
    with pytest.raises(InputError) as err:
        run_extract(tiny_config(out, shards=tuple(second)))
    message = str(err.value)
    assert "\n" not in message
    assert f"holds train-000000 from {first[0]}, not from {second[0]}" in message
    assert f"Use another OUT for {second[0]}" in message
    assert keys(out, "train-000000") == before


def test_more_shards_grow_a_root_and_a_replaced_shard_is_redone(tmp_path, caplog):
    shards, _ = write_shards(tmp_path / "s", 2, 2)
    out = tmp_path / "o"
    run_extract(tiny_config(out, shards=(shards[0],)))
    assert run_extract(tiny_config(out, shards=tuple(shards))).skipped == 1  # a new shard: the root grows
    st = os.stat(shards[0])
    os.utime(shards[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the same name, touched
    with caplog.at_level(logging.WARNING, logger="pipeline.layout"):
        stats = run_extract(tiny_config(out, shards=tuple(shards)))
    assert (stats.skipped, stats.written) == (1, 1)
    assert f"train-000000: {os.path.abspath(shards[0])} changed (size or mtime) since the last run: redoing it" \
        in caplog.text


def test_a_grown_folder_is_redone_saying_why(tmp_path, caplog):
    """Bug 6: files added to a folder redid its unit with no reason given."""
    folder = photo_folder(tmp_path / "photos", [f"p{i:02d}.jpg" for i in range(0, 8, 2)])
    out = tmp_path / "o"
    run_extract(tiny_config(out, images=str(folder)))
    shutil.copy(folder / "p00.jpg", folder / "p01.jpg")
    shutil.copy(folder / "p02.jpg", folder / "p03.jpg")
    (folder / "p06.jpg").unlink()
    with caplog.at_level(logging.INFO):
        stats = run_extract(tiny_config(out, images=str(folder)))
    assert (stats.skipped, stats.written) == (0, 1)
    assert "folder-000000: 2 files added, 1 removed since the last run: redoing it" in caplog.text
    assert keys(out, "folder-000000") == ["p00.jpg", "p01.jpg", "p02.jpg", "p03.jpg", "p04.jpg"]
    os.utime(folder / "p04.jpg", ns=(0, 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_extract(tiny_config(out, images=str(folder)))
    assert "folder-000000: files were replaced or touched (size or mtime changed) since the last run" in caplog.text


def test_index_update_after_a_grown_folder_says_what_to_run(tmp_path):
    """Bug 6: `index --update` refused after a grown folder ("ids would move") while the README offered it for
    growing collections: it now names the command that rebuilds."""
    from pipeline.index.build import IndexConfig, run_index

    folder = photo_folder(tmp_path / "photos", ["p0.jpg", "p2.jpg"])
    out = tmp_path / "o"
    run_extract(tiny_config(out, images=str(folder)))
    run_index(IndexConfig(features=str(out), progress=False))
    shutil.copy(folder / "p0.jpg", folder / "p1.jpg")
    run_extract(tiny_config(out, images=str(folder)))
    with pytest.raises(UserError) as err:
        run_index(IndexConfig(features=str(out), update=True, progress=False))
    message = str(err.value)
    assert "\n" not in message and "ids would move" in message
    assert f"rebuild it: make index FEATURES='{out}' (without --update)" in message
    record = run_index(IndexConfig(features=str(out), progress=False))  # what it says to run works
    assert record.record["count"] == 3
