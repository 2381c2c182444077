"""Labels and split (pipeline.evaluate.labels): label files, folder labels, the stratified split, the join."""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError, MissingInputError
from pipeline.evaluate.labels import Split, folder_labels, read_label_file, resolve_split, stratified_val
from pipeline.io.files import write_json_atomic, write_parquet_atomic
from pipeline.io.schema import FAILURE_SCHEMA
from pipeline.roots.features import open_features
from tests.conftest import clustered_vectors, write_feature_root


def test_unlabelled_keys_missing_features_and_single_image_class(tmp_path, caplog, labels_csv):
    x = clustered_vectors(60, 16, 3, seed=4)
    keys = [f"k{i:03d}" for i in range(60)]
    write_feature_root(tmp_path, x, keys=keys, per_shard=25)
    failures = pa.table({"key": ["gone1"], "shard": ["part-0000"], "index": pa.array([0], pa.int32()),
                         "stage": ["decode"], "reason": ["UnidentifiedImageError"], "detail": [""]},
                        schema=FAILURE_SCHEMA)
    write_parquet_atomic(failures, tmp_path / "failures" / "part-0000.parquet")
    rows = [(k, f"class{i % 3}") for i, k in enumerate(keys[:50])]  # k050..k059: features, no label
    rows += [("k050", ""), ("gone1", "class0"), ("gone2", "class1")]  # empty label; labels, no features
    rows += [("k051", "lonely")]  # a class with one image
    labels = labels_csv(tmp_path / "labels.csv", rows)
    with caplog.at_level(logging.INFO, logger="pipeline.evaluate.labels"):
        split, report = resolve_split([open_features(tmp_path)], str(labels), val_fraction=0.2, seed=0)
    root = report["roots"][0]
    assert root["keys_without_label"] == 9  # k050 (empty label) and k052..k059
    assert root["labels_without_features"] == 2 and root["of_which_failed_extraction"] == 1
    assert report["used"] == 51 and report["num_classes"] == 4 and report["single_image_classes"] == 1
    assert "classes" not in report  # the names are the Split's; the count has its own key
    assert split.classes == ("class0", "class1", "class2", "lonely")
    assert split.keys == tuple(sorted(keys[:50] + ["k051"])) and len(set(split.keys)) == 51
    assert [split.classes[c] for c in split.y[:3]] == ["class0", "class1", "class2"]  # k000, k001, k002
    lonely = split.keys.index("k051")
    assert not split.is_val[lonely]  # kept in train
    expected_val = sum(math.floor(n * 0.2 + 0.5) for n in (17, 17, 16))  # class0..2: k000..k049 by i % 3
    assert report["val"] == int(split.is_val.sum()) == expected_val and report["train"] == 51 - expected_val
    text = caplog.text
    assert "9 of 60 keys have no label" in text and "2 labelled keys have no features (1 of them failed" in text
    assert "1 classes have a single image: kept in train" in text
    assert "1 rows without a key or label ignored" in text
    assert split.rows[0].tolist() == [keys.index(k) for k in split.keys]  # rows found by key, not by order


def test_given_split_is_used_as_is_and_bad_values_are_refused(tmp_path, labels_csv):
    x = clustered_vectors(40, 8, 2, seed=5)
    sha1 = [bytes([i]) * 20 for i in range(40)]
    sha1[4] = sha1[5]  # a val image (4) with a byte-identical train copy (5)
    keys = write_feature_root(tmp_path, x, per_shard=40, sha1=sha1)
    split_of = ["val" if i % 4 == 0 else "train" for i in range(40)]
    table = pa.table({"key": keys, "label": [f"c{i % 2}" for i in range(40)], "split": split_of})
    pq.write_table(table, tmp_path / "labels.parquet")
    sets = [open_features(tmp_path)]
    split, report = resolve_split(sets, str(tmp_path / "labels.parquet"), val_fraction=0.5, seed=0)
    assert split.mode == "given" and report["val"] == 10 and report["val_exact_copies_in_train"] == 1
    assert report["majority_top1"] == 0.0  # train: 20 c1, 10 c0; val: all c0
    assert {k for k, v in zip(split.keys, split.is_val) if v} == {k for k, s in zip(keys, split_of) if s == "val"}
    bad = labels_csv(tmp_path / "bad.csv", [(keys[0], "c0", "train"), (keys[1], "c1", "test")])
    with pytest.raises(InputError, match="split 'test'"):
        resolve_split(sets, str(bad), val_fraction=0.2, seed=0)
    clash = labels_csv(tmp_path / "clash.csv", [(keys[0], "c0"), (keys[0], "c1")])
    with pytest.raises(InputError, match="two labels"):
        resolve_split(sets, str(clash), val_fraction=0.2, seed=0)


def test_bad_label_sources_are_user_errors(tmp_path, labels_csv):
    keys = write_feature_root(tmp_path, clustered_vectors(10, 8, 2, seed=7))  # keys without a folder part
    sets = [open_features(tmp_path)]
    with pytest.raises(MissingInputError, match="does not exist"):
        resolve_split(sets, str(tmp_path / "absent.csv"), val_fraction=0.2, seed=0)
    (tmp_path / "cols.csv").write_text("name,label\na,b\n")
    with pytest.raises(InputError, match="needs columns key and label"):
        read_label_file(tmp_path / "cols.csv")
    for source in ("cls", "txt"):
        with pytest.raises(InputError, match="labels file"):
            resolve_split(sets, source, val_fraction=0.2, seed=0)
    with pytest.raises(InputError, match="no key of .* has a folder part"):
        resolve_split(sets, "folder", val_fraction=0.2, seed=0)
    strangers = labels_csv(tmp_path / "strangers.csv", [("other1", "a"), ("other2", "b")])
    with pytest.raises(InputError, match=f"no labelled key has features.*{keys[0]}"):
        resolve_split(sets, str(strangers), val_fraction=0.2, seed=0)
    singles = labels_csv(tmp_path / "singles.csv", [(k, f"class{i}") for i, k in enumerate(keys)])
    with pytest.raises(InputError, match="leaves val empty"):  # ten classes of one image: all stay in train
        resolve_split(sets, str(singles), val_fraction=0.2, seed=0)


def test_folder_labels_take_the_first_path_part_and_refuse_webdataset_roots(tmp_path):
    keys = ["cat/a.jpg", "cat/sub/b.jpg", "dog/c.jpg", "loose.jpg"]
    assert folder_labels(tmp_path, keys) == {"cat/a.jpg": "cat", "cat/sub/b.jpg": "cat", "dog/c.jpg": "dog"}
    write_json_atomic({"provenance": {}, "config": {"shards": ["train-000000.tar"], "images": None}},
                      tmp_path / "config.json")
    with pytest.raises(InputError, match="webdataset shards.*--labels FILE"):
        folder_labels(tmp_path, keys)


def test_stratified_split_is_seeded_per_class_and_keeps_singletons_in_train():
    y = np.repeat(np.arange(5), [1, 2, 5, 10, 50])
    classes = ("a", "b", "c", "d", "e")
    v = stratified_val(y, classes, 0.2, seed=0)
    assert [int(v[y == c].sum()) for c in range(5)] == [0, 0, 1, 2, 10]  # round(n·0.2), at most n-1
    np.testing.assert_array_equal(v, stratified_val(y, classes, 0.2, seed=0))
    assert not np.array_equal(v, stratified_val(y, classes, 0.2, seed=1))
    assert not np.array_equal(v, stratified_val(y, classes, 0.2, seed=0, salt="heldout"))
    assert [int(x.sum()) for x in np.split(stratified_val(y, classes, 0.9, 0), np.cumsum([1, 2, 5, 10]))] == \
        [0, 1, 4, 9, 45]
    # another class added: the existing classes keep their split
    y2, classes2 = np.concatenate([y, [5] * 7]), classes + ("f",)
    np.testing.assert_array_equal(stratified_val(y2, classes2, 0.2, seed=0)[:len(y)], v)


def test_split_digest_changes_with_any_key_label_or_assignment():
    def split(keys=("a", "b", "c"), y=(0, 1, 1), classes=("x", "y"), is_val=(False, True, False)) -> Split:
        return Split(tuple(keys), np.array(y), tuple(classes), np.array(is_val), "seeded", ())

    base = split().digest()
    assert len(base) == 16 and base == split().digest()
    variants = [split(keys=("a", "b", "d")), split(y=(0, 0, 1)), split(classes=("x", "z")),
                split(is_val=(False, False, True))]
    digests = [s.digest() for s in variants]
    assert base not in digests and len(set(digests)) == len(digests)
