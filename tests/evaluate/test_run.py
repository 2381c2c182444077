"""Evaluation: k-NN against brute force, separable vs random labels, label/split edge cases, compare, real photos."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main as evaluate_main
from pipeline.evaluate.run import (EvalConfig, accuracy, format_results, knn_predict, resolve_split, run_evaluate,
                               stratified_val)
from pipeline.io.features import open_features
from pipeline.io.schema import FAILURE_SCHEMA
from pipeline.io.files import write_json_atomic, write_parquet_atomic
from tests.conftest import clustered_vectors, shared_data, tiny_config, write_feature_root


def brute_knn(train: np.ndarray, train_y: np.ndarray, val: np.ndarray, num_classes: int, k: int,
              temperature: float) -> np.ndarray:
    """The voting rule written out per query: k most similar (ties: lower row), Σ exp(sim/T) per class."""
    top = min(5, num_classes)
    out = np.full((len(val), top), -1, dtype=np.int64)
    t64 = train.astype(np.float64)
    for i, q in enumerate(val):
        sims = (t64 @ q.astype(np.float64)).astype(np.float32)
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        scores: dict[int, float] = {}
        for j in order:
            scores[int(train_y[j])] = scores.get(int(train_y[j]), 0.0) + math.exp(float(sims[j]) / temperature)
        ranked = sorted(scores, key=lambda c: (-scores[c], c))[:top]
        out[i, :len(ranked)] = ranked
    return out


def labelled_root(root: Path, x: np.ndarray, y: np.ndarray, **kwargs) -> list[str]:
    """A feature root whose keys follow the ImageFolder layout `c<label>/img<i>.jpg`."""
    keys = [f"c{c:02d}/img{i:05d}.jpg" for i, c in enumerate(y)]
    return write_feature_root(root, x.astype(np.float32), keys=keys, **kwargs)


def write_labels_csv(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "label", "split"][:len(rows[0])])
        w.writerows(rows)
    return path


def test_knn_equals_brute_force_with_ties_and_k_capped():
    rng = np.random.default_rng(7)
    train = clustered_vectors(150, 16, 6, spread=0.6, seed=1)
    twins = [40, 90, 149, *range(100, 130)]
    train[twins] = train[3]  # 33 exact duplicates of row 3, in all classes: ties broken by lower row
    train_y = rng.integers(0, 7, len(train))
    val = clustered_vectors(60, 16, 6, spread=0.6, seed=2)
    val[:5] = train[3]  # queries whose nearest neighbours are the tied duplicates
    ks = (1, 3, 10, 20, 200)  # 200 > 150 train rows: capped
    preds = knn_predict(train, train_y, val, 7, ks, 0.07, batch_bytes=4 * 150 * 7)  # 7 queries per batch
    whole = knn_predict(train, train_y, val, 7, ks, 0.07)
    val_y = rng.integers(0, 7, len(val))
    for k in ks:
        ref = brute_knn(train, train_y, val, 7, min(k, 150), 0.07)
        np.testing.assert_array_equal(preds[k], ref, err_msg=f"k={k}")
        np.testing.assert_array_equal(whole[k], ref, err_msg=f"k={k} (one batch)")
        hits = ref == val_y[:, None]
        assert accuracy(preds[k], val_y) == (hits[:, 0].mean(), hits.any(1).mean())
    # k=1: the first of the 34 tied copies (row 3) decides; k=20: rows 3, 40, 90, 100..116 vote equally
    assert (preds[1][:5, 0] == train_y[3]).all()
    votes = np.bincount(train_y[[3, 40, 90, *range(100, 117)]], minlength=7)
    assert preds[20][0, 0] == np.flatnonzero(votes == votes.max())[0]
    assert (preds[1][:, 1:] == -1).all()  # one neighbour, one voted class: the other slots are never hits


def test_separable_features_reach_99_percent_with_both_methods(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 800)
    centres = rng.normal(size=(8, 32))
    x = centres[y] + 0.25 * rng.normal(size=(800, 32))
    labelled_root(tmp_path, x, y, per_shard=300)
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), seed=0))
    run = results["runs"][0]
    assert [e["k"] for e in run["knn"]["by_k"]] == [10, 20, 100, 200]
    for entry in run["knn"]["by_k"]:
        assert entry["top1"] >= 0.99, entry
    assert run["linear"]["top1"] >= 0.99, run["linear"]
    assert len(run["linear"]["sweep"]) == 6 and run["linear"]["heldout_rows"] > 0
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["runs"][0]["provenance"]["fingerprint"] == open_features(tmp_path).provenance["fingerprint"]
    assert saved["runs"][0]["provenance"]["model"] == "test"
    expected_val = sum(math.floor(n * 0.2 + 0.5) for n in np.bincount(y))  # per class, so not exactly 160
    assert saved["labels"]["val"] == expected_val and saved["labels"]["train"] == 800 - expected_val


def test_random_labels_sit_at_chance(tmp_path):
    """Labels drawn independently of clustered features: neither method may beat (or trail) chance.

    1,000 val images, 10 balanced classes: top-1 hits ~ Binomial(1000, 0.1), sd 0.0095; ±0.04 is >4 sd (a
    seeded, fixed draw, p < 1e-4 if the code is right). Leaking val into train would put k-NN near 100 %.
    Top-5: linear ranks all 10 classes, chance 0.5 (sd 0.016, bound ±0.065); k-NN counts only classes that
    got a vote, so it may sit below 0.5 but never above.
    """
    rng = np.random.default_rng(1)
    x = clustered_vectors(2000, 32, 20, spread=0.3, seed=3)
    y = rng.integers(0, 10, 2000)
    labelled_root(tmp_path, x, y, per_shard=1000)
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), val_fraction=0.5, seed=0, ks=(10, 20, 100)))
    assert abs(results["labels"]["val"] - 1000) <= 10  # rounded per class
    run = results["runs"][0]
    for entry in run["knn"]["by_k"]:
        assert abs(entry["top1"] - 0.1) < 0.04, entry
        assert entry["top5"] < 0.5 + 0.065, entry
    assert abs(run["linear"]["top1"] - 0.1) < 0.04, run["linear"]
    assert abs(run["linear"]["top5"] - 0.5) < 0.065, run["linear"]


def test_unlabelled_keys_missing_features_and_single_image_class(tmp_path, caplog):
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
    labels = write_labels_csv(tmp_path / "labels.csv", rows)
    cfg = EvalConfig(features=(str(tmp_path),), labels=str(labels), ks=(5,))
    with caplog.at_level(logging.INFO, logger="pipeline.evaluate.run"):
        split, report = resolve_split(cfg, [open_features(tmp_path)])
    root = report["roots"][0]
    assert root["keys_without_label"] == 9  # k050 (empty label) and k052..k059
    assert root["labels_without_features"] == 2 and root["of_which_failed_extraction"] == 1
    assert report["used"] == 51 and report["classes"] == 4 and report["single_image_classes"] == 1
    lonely = split.keys.index("k051")
    assert not split.is_val[lonely]  # kept in train
    text = caplog.text
    assert "9 of 60 keys have no label" in text and "2 labelled keys have no features (1 of them failed" in text
    assert "1 classes have a single image: kept in train" in text
    assert "1 rows without a key or label ignored" in text
    assert split.rows[0].tolist() == [keys.index(k) for k in split.keys]  # rows found by key, not by order
    run_evaluate(cfg)  # and the whole evaluation goes through


def test_given_split_is_used_as_is_and_bad_values_are_refused(tmp_path):
    x = clustered_vectors(40, 8, 2, seed=5)
    sha1 = [bytes([i]) * 20 for i in range(40)]
    sha1[4] = sha1[5]  # a val image (4) with a byte-identical train copy (5)
    keys = write_feature_root(tmp_path, x, per_shard=40, sha1=sha1)
    split_of = ["val" if i % 4 == 0 else "train" for i in range(40)]
    table = pa.table({"key": keys, "label": [f"c{i % 2}" for i in range(40)], "split": split_of})
    pq.write_table(table, tmp_path / "labels.parquet")
    cfg = EvalConfig(features=(str(tmp_path),), labels=str(tmp_path / "labels.parquet"), val_fraction=0.5)
    split, report = resolve_split(cfg, [open_features(tmp_path)])
    assert split.mode == "given" and report["val"] == 10 and report["val_exact_copies_in_train"] == 1
    assert report["majority_top1"] == 0.0  # train: 20 c1, 10 c0; val: all c0
    assert {k for k, v in zip(split.keys, split.is_val) if v} == {k for k, s in zip(keys, split_of) if s == "val"}
    bad = write_labels_csv(tmp_path / "bad.csv", [(keys[0], "c0", "train"), (keys[1], "c1", "test")])
    with pytest.raises(ValueError, match="split 'test'"):
        resolve_split(EvalConfig(features=(str(tmp_path),), labels=str(bad)), [open_features(tmp_path)])
    clash = write_labels_csv(tmp_path / "clash.csv", [(keys[0], "c0"), (keys[0], "c1")])
    with pytest.raises(ValueError, match="two labels"):
        resolve_split(EvalConfig(features=(str(tmp_path),), labels=str(clash)), [open_features(tmp_path)])


def test_stratified_split_is_seeded_per_class_and_keeps_singletons_in_train():
    y = np.repeat(np.arange(5), [1, 2, 5, 10, 50])
    classes = ("a", "b", "c", "d", "e")
    v = stratified_val(y, classes, 0.2, seed=0)
    assert [int(v[y == c].sum()) for c in range(5)] == [0, 0, 1, 2, 10]  # round(n·0.2), at most n-1
    np.testing.assert_array_equal(v, stratified_val(y, classes, 0.2, seed=0))
    assert not np.array_equal(v, stratified_val(y, classes, 0.2, seed=1))
    assert [int(x.sum()) for x in np.split(stratified_val(y, classes, 0.9, 0), np.cumsum([1, 2, 5, 10]))] == \
        [0, 1, 4, 9, 45]
    # another class added: the existing classes keep their split
    y2, classes2 = np.concatenate([y, [5] * 7]), classes + ("f",)
    np.testing.assert_array_equal(stratified_val(y2, classes2, 0.2, seed=0)[:len(y)], v)


def test_webdataset_features_need_a_labels_file(tmp_path, capsys):
    x = clustered_vectors(20, 8, 2, seed=6)
    keys = write_feature_root(tmp_path, x)
    write_json_atomic({"provenance": {}, "config": {"shards": ["train-000000.tar"], "images": None}},
                      tmp_path / "config.json")
    with pytest.raises(SystemExit) as exc:
        evaluate_main(["--features", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cls" in err and "labels file" in err
    labels = write_labels_csv(tmp_path / "l.csv", [(k, f"c{i % 2}") for i, k in enumerate(keys)])
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), labels=str(labels), ks=(3,), linear=False))
    assert results["labels"]["used"] == 20


def test_compare_puts_feature_sets_side_by_side_on_one_split(tmp_path, capsys):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 200)
    centres = rng.normal(size=(4, 16))
    x = centres[y] + 0.8 * rng.normal(size=(200, 16))
    noisy = x + 0.5 * rng.normal(size=x.shape)
    a, b = tmp_path / "a", tmp_path / "b"
    labelled_root(a, x, y, per_shard=80)
    prov_b = {"model": "test", "weights": {"source": "file", "sha256": "ab" * 32, "path": None},
              "input_size": [3, 224, 224], "resize_mode": "fixed"}
    keys = labelled_root(b, noisy, y, per_shard=80, provenance=prov_b)
    # b lost three images: compare uses the keys present in both, so both columns see the same images
    table = pq.read_table(b / "features" / "part-0000.parquet")
    write_parquet_atomic(table.slice(3), b / "features" / "part-0000.parquet")
    with pytest.raises(SystemExit) as exc:
        evaluate_main(["--compare", str(a), str(b), "--feature", "cls,concat", "--k", "10,20",
                       "--log-level", "WARNING"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "197 images, 4 classes" in out and "differs from 1st" in out and "input_size" in out
    assert re.search(r"^10-NN\s+\S+ / \S+\s+\S+ / \S+\s+\S+ / \S+\s+\S+ / \S+$", out, re.M), out
    saved = json.loads((a / "eval" / "compare.json").read_text())
    assert [(Path(r["features"]).name, r["feature"]) for r in saved["runs"]] == \
        [("a", "cls"), ("a", "concat"), ("b", "cls"), ("b", "concat")]
    fps = {r["provenance"]["fingerprint"] for r in saved["runs"]}
    assert len(fps) == 2
    assert saved["labels"]["roots"][1]["labels_without_features"] == 3 and saved["labels"]["used"] == 197
    assert keys[0] not in json.dumps(saved)  # the split is over common keys; b lacks keys[0]
    # evaluated alone, a and b see different images: their protocol fingerprints say so
    alone_a = run_evaluate(EvalConfig(features=(str(a),), ks=(10,), linear=False, out=str(tmp_path / "ea")))
    alone_b = run_evaluate(EvalConfig(features=(str(b),), ks=(10,), linear=False, out=str(tmp_path / "eb")))
    assert alone_a["protocol_fingerprint"] != alone_b["protocol_fingerprint"]
    again = run_evaluate(EvalConfig(features=(str(a),), ks=(10,), linear=False, out=str(tmp_path / "ea2")))
    assert again["protocol_fingerprint"] == alone_a["protocol_fingerprint"]
    assert again["runs"][0]["knn"] == {**alone_a["runs"][0]["knn"], "seconds": again["runs"][0]["knn"]["seconds"]}


def test_help_names_the_label_sources(capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ["--features", "--compare", "--labels", "--val-fraction", "--seed", "--out", "labels file"]:
        assert word in text, word


# ---------------------------------------------------------------- real photos

def read_groups(folder: Path) -> dict[str, str]:
    """file (relative to the folder) → group id; `dir/*.(png|jpg) (13 files)` rows expand to existing files."""
    groups: dict[str, str] = {}
    with open(folder / "groups.csv") as f:
        for row in csv.DictReader(f):
            entry = (row.get("file") or row.get("file_or_glob")).strip()
            group = row["group_id"]
            if "*" in entry:
                pattern, _, _ = entry.partition(" (")
                parent, name = pattern.rsplit("/", 1)
                exts = set(re.search(r"\(([^)]*)\)", name).group(1).split("|"))
                files = [p.relative_to(folder).as_posix() for p in sorted((folder / parent).iterdir())
                         if p.suffix.lstrip(".").lower() in exts]
            else:
                files = [entry] if (folder / entry).exists() else []  # MISSING_FILES.txt lists the absent ones
            for file in files:
                assert groups.setdefault(file, group) == group, f"{file} in two groups"
    return groups


def test_real_photos_imagefolder_tree_end_to_end(tmp_path, capsys):
    from pipeline.extract.runner import run_extract

    tree = tmp_path / "tree"
    n_by_class: dict[str, int] = {}
    for name in ("jenssegers_imagehash", "pdq_threatexchange"):
        folder = shared_data(name)
        for file, group in read_groups(folder).items():
            label = f"{name.split('_')[0]}-{group}"
            link = tree / label / file.replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder / file)
            n_by_class[label] = n_by_class.get(label, 0) + 1
    images = sum(n_by_class.values())
    singles = sum(1 for n in n_by_class.values() if n == 1)
    assert images >= 70 and len(n_by_class) >= 15 and singles >= 9
    out = tmp_path / "out"
    stats = run_extract(tiny_config(out, images=str(tree), folder_shard_size=64))
    assert stats.images + stats.failures == images
    with pytest.raises(SystemExit) as exc:
        evaluate_main(["--features", str(out), "--feature", "cls,concat", "--val-fraction", "0.3",
                       "--log-level", "WARNING"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{images} real photos, {len(n_by_class)} classes ({singles} of one image), tiny random ViT:")
        print(printed)
    saved = json.loads((out / "eval" / "results.json").read_text())
    lab = saved["labels"]
    assert lab["used"] == stats.images and lab["classes"] == len(n_by_class)
    assert lab["single_image_classes"] == singles and lab["train"] + lab["val"] == lab["used"]
    for run in saved["runs"]:
        assert run["provenance"]["weights"]["source"] == "random" and "random weights" in run["note"]
        for entry in run["knn"]["by_k"]:
            assert entry["k_used"] == min(entry["k"], lab["train"])
            assert 0 <= entry["top1"] <= entry["top5"] <= 1
    assert "note: random weights" in printed and format_results(saved).splitlines()[0] in printed
