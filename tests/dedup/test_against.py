"""New images against a processed collection (issue 14): grouped with each other and with the old images, the
old collection never regrouped; each new image kept or a duplicate of an old or a new key."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.errors import ConfigError, MismatchError
from tests.conftest import write_feature_root


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def collection(tmp_path):
    """An old collection of 200 random images and 8 new ones: an embedding copy of old 5, a byte copy of old
    7, a pHash copy of old 9 (mirrored; cosine ≈ 0.8: under the threshold 0.9, over --phash-min-cosine), a new
    pair (n3, n4) of each other only, a new image chained to old 11 through another new one (n5 → n6 → old 11),
    and one new unique image."""
    rng = np.random.default_rng(3)
    old = unit(rng.normal(size=(200, 32)))
    old_keys = [f"old{i:03d}" for i in range(200)]
    old_sha1 = [hashlib.sha1(k.encode()).digest() for k in old_keys]
    old_phash = rng.integers(0, 2**63, 200, dtype=np.uint64) * 2 + 1
    write_feature_root(tmp_path / "old", old, keys=old_keys, sha1=old_sha1, phash=old_phash)
    new = unit(rng.normal(size=(8, 32)))
    new[0] = unit(old[5] + 0.05 * rng.normal(size=32))  # embedding copy of old005
    new[4] = unit(new[3] + 0.05 * rng.normal(size=32))  # n3 ~ n4
    new[6] = unit(old[11] + 0.05 * rng.normal(size=32))  # n6 ~ old011
    new[5] = unit(new[6] + 0.05 * rng.normal(size=32))  # n5 ~ n6
    new[2] = unit(old[9] + 0.8 * unit(rng.normal(size=32)))  # mirrored copy of old009: cos ≈ 0.8, below 0.9
    keys = [f"n{i}" for i in range(8)]
    sha1 = [hashlib.sha1(k.encode()).digest() for k in keys]
    sha1[1] = old_sha1[7]  # byte copy of old007
    phash = rng.integers(0, 2**63, 8, dtype=np.uint64) * 2 + 1
    mirror = ~phash
    mirror[2] = old_phash[9] ^ np.uint64(0b111)  # its mirrored hash is 3 bits from old009's
    pixels = np.array([100, 100, 100, 50, 200, 100, 100, 100])  # n4 is the larger of the new pair
    write_feature_root(tmp_path / "new", new, keys=keys, sha1=sha1, phash=phash, phash_mirror=mirror, pixels=pixels)
    return tmp_path, old, new


def test_each_new_image_is_kept_or_a_duplicate_of_an_old_or_new_key(collection):
    collection, old, new = collection
    old_files = sorted((collection / "old").rglob("*"))
    summary = run_dedup(DedupConfig(features=str(collection / "new"), against=str(collection / "old"),
                                    threshold=0.9, progress=False))
    rows = {r["key"]: r for r in pq.read_table(collection / "new" / "dedup" / "against.parquet").to_pylist()}
    got = {k: (r["keep"], r["duplicate_of"], r["duplicate_in"], r["reason"]) for k, r in rows.items()}
    assert got == {
        "n0": (False, "old005", "old", "embedding"),
        "n1": (False, "old007", "old", "exact"),
        "n2": (False, "old009", "old", "phash"),
        "n3": (False, "n4", "new", "embedding"),
        "n4": (True, None, None, "keep"),
        "n5": (False, "old011", "old", "embedding"),  # through n6: its group touches the collection
        "n6": (False, "old011", "old", "embedding"),
        "n7": (True, None, None, "unique"),
    }
    # similarity: the exact cosine to the image it duplicates (float16 storage)
    for key, a, b in (("n0", new[0], old[5]), ("n5", new[5], old[11]), ("n3", new[3], new[4])):
        assert rows[key]["similarity"] == pytest.approx(float(a @ b), abs=2e-3)
    assert rows["n7"]["similarity"] is None and rows["n4"]["similarity"] is None
    # the keeper of the new pair says why (no image files here: the extracted size decides)
    assert {k: r["keep_reason"] for k, r in rows.items() if r["keep_reason"]} == {
        "n4": "no file of the group could be read, ranked by the extracted size and the path only; "
              "most pixels (200 px against 50 px)"}
    assert summary.record["images"] == 8 and summary.record["collection"] == 200 and summary.record["kept"] == 2
    assert summary.record["duplicates_of_old"] == 5 and summary.record["duplicates_of_new"] == 1
    assert sorted((collection / "old").rglob("*")) == old_files  # the collection is not touched


def test_the_collection_must_come_from_the_same_model(collection):
    collection, _, _ = collection
    rng = np.random.default_rng(0)
    other = {"model": "another", "weights": {"source": "file", "sha256": "cd" * 32, "path": None},
             "input_size": [3, 56, 56], "resize_mode": "fixed"}
    write_feature_root(collection / "other", unit(rng.normal(size=(5, 32))), provenance=other)
    with pytest.raises(MismatchError):
        run_dedup(DedupConfig(features=str(collection / "new"), against=str(collection / "other"), progress=False))
    with pytest.raises(ConfigError, match="separate runs"):
        DedupConfig(features="x", against="y", reference="z")


def test_the_command_line_says_what_it_found(collection, capsys):
    from jobs import dedup as job
    from jobs._cli import build_parser

    root, _, _ = collection
    args = build_parser(job).parse_args(["--features", str(root / "new"), "--against", str(root / "old"),
                                         "--threshold", "0.9", "--no-progress"])
    assert job.run(args) == 0
    out = capsys.readouterr().out
    assert "(200 images): 8 new images, 2 kept, 5 duplicates of the collection, 1 of other new images" in out
    assert out.rstrip().endswith("/dedup/against.parquet")
