"""The evaluate stage (pipeline.evaluate.run and jobs.evaluate).

Config checks, results.json, compare, CLI, separable vs random labels, real photos.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main as evaluate_main
from pipeline.errors import ConfigError
from pipeline.evaluate import knn, linear
from pipeline.evaluate.knn import accuracy
from pipeline.evaluate.labels import resolve_split
from pipeline.evaluate.run import KS, WEIGHT_DECAYS, EvalConfig, format_results, run_evaluate
from pipeline.io.files import write_json_atomic, write_parquet_atomic
from pipeline.roots.features import open_features
from tests.conftest import clustered_vectors, shared_data, tiny_config, write_feature_root


@pytest.mark.parametrize("bad", [
    {"features": ()}, {"feature": ("cls", "pixels")}, {"feature": ()}, {"ks": (0, 10)}, {"ks": ()},
    {"temperature": 0.0}, {"val_fraction": 1.0}, {"heldout_fraction": 0.0}, {"weight_decays": (-1e-3,)},
    {"weight_decays": ()}, {"knn": False, "linear": False},
])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        EvalConfig(**{"features": ("out",), **bad})


def test_defaults_are_the_dino_protocol_declared_by_the_modules_that_use_them():
    cfg = EvalConfig(features=("out",))
    assert cfg.ks is KS is knn.KS and KS == (10, 20, 100, 200) and cfg.temperature == knn.TEMPERATURE == 0.07
    assert cfg.weight_decays is WEIGHT_DECAYS is linear.WEIGHT_DECAYS and cfg.max_iter == linear.MAX_ITER
    assert cfg.labels == "folder" and cfg.feature == ("cls",) and (cfg.val_fraction, cfg.seed) == (0.2, 0)


def test_separable_features_reach_99_percent_with_both_methods(tmp_path, blobs, labelled_root):
    x, y = blobs(800, 8, 32, noise=0.25, seed=0)
    labelled_root(tmp_path, x, y, per_shard=300)
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), seed=0))
    run = results.record["runs"][0]
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


def test_results_json_lists_the_class_names_and_counts_them_apart(tmp_path, blobs, labelled_root, labels_csv):
    names = ["emu", "cat", "dog"]
    x, y = blobs(60, 3, 8, noise=0.3, seed=8)
    keys = labelled_root(tmp_path, x, y, names=names, per_shard=25)
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), ks=(5,), linear=False))
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["labels"]["classes"] == ["cat", "dog", "emu"]  # the names, sorted: class index = position
    assert saved["labels"]["num_classes"] == 3 and saved["labels"]["source"] == "folder"
    assert results.record["labels"]["classes"] == saved["labels"]["classes"]
    assert format_results(saved).startswith(f"{saved['labels']['used']} images, 3 classes (folder):")
    # a labels file: its names, not the folders'
    labels = labels_csv(tmp_path / "labels.csv", [(k, ["north", "south"][i % 2]) for i, k in enumerate(keys)])
    out = tmp_path / "by_file"
    run_evaluate(EvalConfig(features=(str(tmp_path),), labels=str(labels), ks=(5,), linear=False, out=str(out)))
    lab = json.loads((out / "results.json").read_text())["labels"]
    assert lab["classes"] == ["north", "south"] and lab["num_classes"] == 2 and lab["source"] == str(labels)


def test_knn_numbers_in_results_equal_brute_force_on_the_same_split(tmp_path, blobs, labelled_root, brute_knn):
    x, y = blobs(150, 5, 12, noise=1.2, seed=9)  # overlapping classes: accuracies well below 1
    labelled_root(tmp_path, x, y, per_shard=60)
    ks = (1, 7, 200)
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), ks=ks, temperature=0.1, linear=False))
    split, _ = resolve_split([open_features(tmp_path)], "folder", val_fraction=0.2, seed=0)
    x32 = x.astype(np.float32)
    unit = (x32 / np.linalg.norm(x32, axis=1, keepdims=True))[split.rows[0]]
    train, val = unit[~split.is_val], unit[split.is_val]
    by_k = results.record["runs"][0]["knn"]["by_k"]
    for entry, k in zip(by_k, ks):
        ref = brute_knn(train, split.y[~split.is_val], val, 5, min(k, len(train)), 0.1)
        top1, top5 = accuracy(ref, split.y[split.is_val])
        assert (entry["k"], entry["k_used"], entry["top1"], entry["top5"]) == (k, min(k, len(train)), top1, top5)
    assert 0.3 < by_k[1]["top1"] < 0.95


def test_random_labels_sit_at_chance(tmp_path, labelled_root):
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
    assert abs(results.record["labels"]["val"] - 1000) <= 10  # rounded per class
    run = results.record["runs"][0]
    for entry in run["knn"]["by_k"]:
        assert abs(entry["top1"] - 0.1) < 0.04, entry
        assert entry["top5"] < 0.5 + 0.065, entry
    assert abs(run["linear"]["top1"] - 0.1) < 0.04, run["linear"]
    assert abs(run["linear"]["top5"] - 0.5) < 0.065, run["linear"]


def test_webdataset_features_need_a_labels_file(tmp_path, capsys, labels_csv):
    x = clustered_vectors(20, 8, 2, seed=6)
    keys = write_feature_root(tmp_path, x)
    write_json_atomic({"provenance": {}, "config": {"shards": ["train-000000.tar"], "images": None}},
                      tmp_path / "config.json")
    with pytest.raises(SystemExit) as exc:
        evaluate_main(["--features", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cls" in err and "labels file" in err
    labels = labels_csv(tmp_path / "l.csv", [(k, f"c{i % 2}") for i, k in enumerate(keys)])
    results = run_evaluate(EvalConfig(features=(str(tmp_path),), labels=str(labels), ks=(3,), linear=False))
    assert results.record["labels"]["used"] == 20 and results.record["labels"]["classes"] == ["c0", "c1"]


def test_compare_puts_feature_sets_side_by_side_on_one_split(tmp_path, capsys, blobs, labelled_root):
    x, y = blobs(200, 4, 16, noise=0.8, seed=2)
    noisy = x + 0.5 * np.random.default_rng(3).normal(size=x.shape)
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
    assert saved["labels"]["classes"] == ["c00", "c01", "c02", "c03"]
    assert keys[0] not in json.dumps(saved)  # the split is over common keys; b lacks keys[0]
    # evaluated alone, a and b see different images: their protocol fingerprints say so
    alone_a = run_evaluate(EvalConfig(features=(str(a),), ks=(10,), linear=False, out=str(tmp_path / "ea")))
    alone_b = run_evaluate(EvalConfig(features=(str(b),), ks=(10,), linear=False, out=str(tmp_path / "eb")))
    assert alone_a.record["protocol_fingerprint"] != alone_b.record["protocol_fingerprint"]
    again = run_evaluate(EvalConfig(features=(str(a),), ks=(10,), linear=False, out=str(tmp_path / "ea2")))
    assert again.record["protocol_fingerprint"] == alone_a.record["protocol_fingerprint"]
    knn_again = again.record["runs"][0]["knn"]
    assert knn_again == {**alone_a.record["runs"][0]["knn"], "seconds": knn_again["seconds"]}


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
    assert lab["used"] == stats.images and lab["num_classes"] == len(n_by_class)
    assert lab["classes"] == sorted(n_by_class)
    assert lab["single_image_classes"] == singles and lab["train"] + lab["val"] == lab["used"]
    for run in saved["runs"]:
        assert run["provenance"]["weights"]["source"] == "random" and "random weights" in run["note"]
        for entry in run["knn"]["by_k"]:
            assert entry["k_used"] == min(entry["k"], lab["train"])
            assert 0 <= entry["top1"] <= entry["top5"] <= 1
    assert "note: random weights" in printed and format_results(saved).splitlines()[0] in printed
