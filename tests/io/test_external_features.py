"""Features made elsewhere (pipeline/roots/external.py, features.py): .npy and Parquet in, export-npy out, stages."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.curate.npy_export import EXPORT_KEY, ExportNpyConfig, run_export_npy
from pipeline.errors import ConfigError, InputError, MissingInputError, MixedProvenanceError, UserError
from pipeline.layout import OutputRoot
from pipeline.provenance import fingerprint
from pipeline.roots.features import (
    check_feature,
    check_same_provenance,
    iter_batches,
    open_features,
    read_matrix,
    read_meta,
)
from tests.conftest import clustered_vectors, listing, tiny_config, write_feature_root, write_shards

REPO = Path(__file__).resolve().parents[2]


def unit(x: np.ndarray) -> np.ndarray:
    """The brute-force reference: float64 rows over their norms, as float32."""
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vectors(n: int = 40, d: int = 8, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (n, d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ .npy in
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_npy_reads_back_normalised_in_slices_with_row_number_keys(tmp_path, dtype):
    x = vectors(37, 8).astype(dtype)
    np.save(tmp_path / "emb.npy", x)
    fs = open_features(tmp_path / "emb.npy")
    assert (fs.kind, fs.count, fs.dim("cls"), fs.dim("patch_mean"), fs.external) == ("npy", 37, 8, 8, True)
    expected = unit(x.astype(np.float32))
    np.testing.assert_allclose(read_matrix(fs, "cls"), expected, atol=1e-6)
    np.testing.assert_allclose(read_matrix(fs, "cls", batch_rows=5), expected, atol=1e-6)
    batches = list(iter_batches(fs, ["key", "cls"], batch_rows=10))
    assert [b.num_rows for b in batches] == [10, 10, 10, 7]  # read in slices, never the whole file at once
    assert batches[0].schema.field("cls").type == pa.list_(pa.float16() if dtype == "float16" else pa.float32(), 8)
    meta = read_meta(fs, ("key", "shard", "index"))
    assert meta.column("key").to_pylist() == [str(i) for i in range(37)]
    assert meta.column("id").to_pylist() == list(range(37))
    assert meta.column("shard").null_count == 37 and meta.column("index").type == pa.int32()


def test_keys_file_names_the_rows_and_its_count_is_checked(tmp_path):
    np.save(tmp_path / "emb.npy", vectors(5))
    (tmp_path / "keys.txt").write_text("a/1.jpg\nb/2.jpg\nc\nd\ne\n")
    fs = open_features(tmp_path / "emb.npy", keys=tmp_path / "keys.txt")
    assert read_meta(fs, ("key",)).column("key").to_pylist() == ["a/1.jpg", "b/2.jpg", "c", "d", "e"]
    assert [b.column(0).to_pylist() for b in iter_batches(fs, ["key"], 3)] == [["a/1.jpg", "b/2.jpg", "c"], ["d", "e"]]
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match="holds 2 keys, the features 5 rows"):
        open_features(tmp_path / "emb.npy", keys=tmp_path / "short.txt")
    (tmp_path / "gap.txt").write_text("a\n\nc\nd\ne\n")
    with pytest.raises(InputError, match="line 2 is empty"):
        open_features(tmp_path / "emb.npy", keys=tmp_path / "gap.txt")
    with pytest.raises(InputError, match="does not exist"):
        open_features(tmp_path / "emb.npy", keys=tmp_path / "nope.txt")
    write_feature_root(tmp_path / "root", vectors(5))
    with pytest.raises(ConfigError, match="keys of a .npy"):
        open_features(tmp_path / "root", keys=tmp_path / "keys.txt")


@pytest.mark.parametrize("array, match", [
    (np.zeros(6, np.float32), r"shape \(6,\)"),
    (np.zeros((2, 3, 4), np.float32), r"shape \(2, 3, 4\)"),
    (np.zeros((3, 0), np.float32), r"shape \(3, 0\)"),
    (np.zeros((3, 4), np.float64), "float64 values"),
    (np.zeros((3, 4), np.int32), "int32 values"),
])
def test_npy_of_the_wrong_shape_or_dtype_is_one_clear_error(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=match):
        open_features(tmp_path / "bad.npy")


def test_a_file_that_is_no_npy_and_a_missing_one(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="not a readable .npy"):
        open_features(tmp_path / "bad.npy")
    with pytest.raises(MissingInputError, match="does not exist"):
        open_features(tmp_path / "absent.npy")
    (tmp_path / "emb.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="a .npy, a .parquet file or a folder"):
        open_features(tmp_path / "emb.txt")


def test_npy_has_one_vector_per_row_so_concat_and_hashes_are_refused(tmp_path):
    np.save(tmp_path / "emb.npy", vectors(4))
    fs = open_features(tmp_path / "emb.npy")
    with pytest.raises(ConfigError, match="concat"):
        fs.dim("concat")
    with pytest.raises(ConfigError, match="concat"):
        read_matrix(fs, "concat")
    with pytest.raises(InputError, match="no sha1, phash.*hashes"):
        read_meta(fs, ("key", "sha1", "phash"))
    nulls = read_meta(fs, ("key", "width", "sha1"), absent="null")
    assert nulls.column("sha1").null_count == 4 and nulls.column("sha1").type == pa.binary(20)


# ------------------------------------------------------------------------------------------------ Parquet in
def test_parquet_file_and_folder_with_list_columns(tmp_path):
    x, y = vectors(12, 6, seed=1), vectors(12, 3, seed=2)
    ragged = pa.array([list(map(float, r)) for r in x], pa.list_(pa.float32()))
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(y.astype(np.float16).reshape(-1)), 3)
    table = pa.table({"key": [f"k{i:02d}" for i in range(12)], "emb": ragged, "small": fixed, "note": ["x"] * 12})
    pq.write_table(table, tmp_path / "one.parquet")
    fs = open_features(tmp_path / "one.parquet")
    assert (fs.kind, fs.count, fs.dim("emb"), fs.dim("small")) == ("parquet", 12, 6, 3)
    assert fs.provenance["columns"] == {"emb": {"dim": 6, "dtype": "float32"}, "small": {"dim": 3, "dtype": "float16"}}
    np.testing.assert_allclose(read_matrix(fs, "emb", batch_rows=5), unit(x), atol=1e-6)
    np.testing.assert_allclose(read_matrix(fs, "small"), unit(y.astype(np.float16)), atol=1e-3)
    with pytest.raises(InputError, match="no vector column 'cls'.*--feature"):
        fs.dim("cls")
    # a folder: files in name order assign the ids; keys of any type come back as text
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(table.slice(7).drop_columns(["note"]).set_column(0, "key", pa.array(range(107, 112))),
                   folder / "b.parquet")
    pq.write_table(table.slice(0, 7).drop_columns(["note"]).set_column(0, "key", pa.array(range(100, 107))),
                   folder / "a.parquet")
    fs = open_features(folder)
    assert fs.files == (folder / "a.parquet", folder / "b.parquet") and fs.rows == (7, 5)
    assert read_meta(fs, ("key",)).column("key").to_pylist() == [str(i) for i in range(100, 112)]
    np.testing.assert_allclose(read_matrix(fs, "emb"), unit(x), atol=1e-6)
    assert OutputRoot.for_features(folder).root == tmp_path / "folder.dinocurate"


@pytest.mark.parametrize("columns, match", [
    ({"id": ["a", "b"], "emb": [[1.0, 2.0], [3.0, 4.0]]}, "no `key` column"),
    ({"key": ["a", "b"], "emb": [1.0, 2.0]}, "no list<float> column"),
])
def test_parquet_without_key_or_vectors_is_refused(tmp_path, columns, match):
    pq.write_table(pa.table(columns), tmp_path / "x.parquet")
    with pytest.raises(InputError, match=match):
        open_features(tmp_path / "x.parquet")


def test_parquet_rows_of_other_widths_or_without_a_vector_are_refused_when_read(tmp_path):
    pq.write_table(pa.table({"key": ["a", "b"], "emb": [[1.0, 2.0], [3.0, 4.0, 5.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match="different lengths"):
        read_matrix(open_features(tmp_path / "ragged.parquet"), "emb")
    pq.write_table(pa.table({"key": ["a", "b"], "emb": [[1.0, 2.0], None]}), tmp_path / "null.parquet")
    with pytest.raises(InputError, match="1 rows have no vector"):
        read_matrix(open_features(tmp_path / "null.parquet"), "emb")


def test_feature_names_other_than_the_extract_ones_only_for_parquet_made_elsewhere(tmp_path):
    pq.write_table(pa.table({"key": ["a"], "emb": [[1.0, 2.0]]}), tmp_path / "x.parquet")
    write_feature_root(tmp_path / "root", vectors(3))
    check_feature("emb", str(tmp_path / "x.parquet"))
    check_feature("concat", str(tmp_path / "root"))
    with pytest.raises(ConfigError, match="feature must be one of"):
        check_feature("emb", str(tmp_path / "root"))


# ------------------------------------------------------------------------------------------------ provenance
def test_provenance_is_external_with_the_file_digest_and_counts_content_not_place(tmp_path):
    np.save(tmp_path / "emb.npy", vectors(6, 4))
    prov = open_features(tmp_path / "emb.npy").provenance
    digest = hashlib.sha256((tmp_path / "emb.npy").read_bytes()).hexdigest()
    assert {k: prov[k] for k in ("source", "format", "path", "sha256", "rows", "keys")} == {
        "source": "external", "format": "npy", "path": str((tmp_path / "emb.npy").resolve()), "sha256": digest,
        "rows": 6, "keys": None}
    assert prov["columns"] == {"*": {"dim": 4, "dtype": "float32"}} and prov["fingerprint"] == fingerprint(prov)
    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "emb.npy", tmp_path / "moved" / "emb.npy")
    (tmp_path / "k.txt").write_text("".join(f"k{i}\n" for i in range(6)))
    moved = open_features(tmp_path / "moved" / "emb.npy", keys=tmp_path / "k.txt").provenance
    assert moved["fingerprint"] == prov["fingerprint"] and moved["keys"] == str((tmp_path / "k.txt").resolve())
    np.save(tmp_path / "other.npy", vectors(6, 4, seed=9))
    assert open_features(tmp_path / "other.npy").provenance["fingerprint"] != prov["fingerprint"]
    # a Parquet folder: the digest of its files' names and digests
    folder = tmp_path / "pq"
    folder.mkdir()
    for name in ("b", "a"):
        pq.write_table(pa.table({"key": [name], "v": [[1.0, 2.0]]}), folder / f"{name}.parquet")
    lines = "".join(f"{n}.parquet {hashlib.sha256((folder / f'{n}.parquet').read_bytes()).hexdigest()}\n"
                    for n in ("a", "b"))
    assert open_features(folder).provenance["sha256"] == hashlib.sha256(lines.encode()).hexdigest()


def test_mixing_with_an_extract_root_is_refused_two_sets_made_elsewhere_need_one_width(tmp_path, caplog):
    write_feature_root(tmp_path / "root", vectors(10, 8))
    np.save(tmp_path / "a.npy", vectors(10, 8))
    np.save(tmp_path / "b.npy", vectors(5, 8, seed=4))
    np.save(tmp_path / "c.npy", vectors(5, 6))
    pq.write_table(pa.table({"key": ["x"], "emb": [[1.0] * 8]}), tmp_path / "d.parquet")
    root, a, b, c, d = (open_features(tmp_path / n) for n in ("root", "a.npy", "b.npy", "c.npy", "d.parquet"))
    for x, y in ((a, root), (root, a)):
        with pytest.raises(MixedProvenanceError, match="external npy .*a.npy sha256=.*model=test"
                           if x is a else "model=test.*external npy"):
            check_same_provenance(x, y)
    with caplog.at_level(logging.WARNING, logger="pipeline.provenance"):
        check_same_provenance(a, b)
        check_same_provenance(a, d)
    assert "only their widths" in caplog.text
    with pytest.raises(MixedProvenanceError, match="other widths"):
        check_same_provenance(a, c)


# ------------------------------------------------------------------------------------------------ stages
@pytest.fixture
def planted(tmp_path) -> tuple[Path, np.ndarray, list[str]]:
    """emb.npy: 60 vectors in 4 clusters (64 dims), rows 50-52 near-copies of rows 3, 17, 40; keys.txt."""
    x = clustered_vectors(60, 64, 4, spread=1.0, seed=5)
    for row, of in zip((50, 51, 52), (3, 17, 40)):
        x[row] = x[of] + 0.01 * np.random.default_rng(row).normal(size=64)
    np.save(tmp_path / "emb.npy", x.astype(np.float16))
    keys = [f"{'cat' if i % 2 else 'dog'}/img{i:03d}.jpg" for i in range(60)]
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n")
    return tmp_path / "emb.npy", x, keys


def test_index_and_knn_on_an_npy_equal_brute_force_and_write_beside_it(planted):
    from pipeline.index.build import IndexConfig, load_index, run_index
    from pipeline.index.knn import KnnConfig, iter_parts, run_knn

    path, x, keys = planted
    record = run_index(IndexConfig(features=str(path), keys=str(path.parent / "keys.txt"), progress=False)).record
    out = path.parent / "emb.npy.dinocurate"
    assert record["factory"] == "Flat" and record["count"] == 60 and record["provenance"]["source"] == "external"
    loaded = load_index(out / "index")
    assert loaded.ids.column("key").to_pylist() == keys and loaded.ids.column("id").to_pylist() == list(range(60))
    result = run_knn(KnnConfig(features=str(path), k=3, progress=False))
    assert result.graph == out / "knn"
    x16 = unit(x.astype(np.float16).astype(np.float32))
    sims = x16 @ x16.T
    np.fill_diagonal(sims, -np.inf)
    for ids, nb, sm in iter_parts(result.graph):
        for i, row, s in zip(ids, nb, sm):
            np.testing.assert_allclose(s, np.sort(sims[i])[::-1][:3], atol=1e-5)
            assert set(row) == set(np.argsort(-sims[i])[:3])


def test_dedup_on_an_npy_uses_embedding_edges_only_and_says_why(planted, caplog):
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup

    path, x, keys = planted
    with caplog.at_level(logging.INFO):
        summary = run_dedup(DedupConfig(features=str(path), keys=str(path.parent / "keys.txt"), threshold=0.95,
                                        progress=False))
    assert "exact and perceptual stages are skipped" in caplog.text
    skipped = {"edges": 0, "skipped": "no image hashes (features made elsewhere)"}
    assert summary.record["stages"]["exact"] == skipped and summary.record["stages"]["phash"] == skipped
    groups = pq.read_table(path.parent / "emb.npy.dinocurate" / "dedup" / "groups.parquet").to_pydict()
    x16 = unit(x.astype(np.float16).astype(np.float32))
    sims = np.triu(x16 @ x16.T, 1)
    pairs = {tuple(p) for p in np.argwhere(sims > 0.95).tolist()}
    assert pairs == {(3, 50), (17, 51), (40, 52)}  # the brute-force truth at this threshold
    removed = [i for i, k in enumerate(groups["keep"]) if not k]
    assert removed == [50, 51, 52] and summary.record["removed"] == 3  # no pixels known: the smaller key is kept
    assert [groups["nearest_key"][i] for i in removed] == [keys[3], keys[17], keys[40]]
    assert {groups["reason"][i] for i in removed} == {"embedding"} and groups["shard"] == [None] * 60


def test_dedup_against_or_reference_made_elsewhere_needs_hashes_and_never_mixes(planted, tmp_path):
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup

    path, x, _ = planted
    np.save(tmp_path / "old.npy", x[:20])
    with pytest.raises(InputError, match="no width, height, sha1, phash; this step needs the images' hashes"):
        run_dedup(DedupConfig(features=str(path), against=str(tmp_path / "old.npy"), progress=False))
    write_feature_root(tmp_path / "root", x[:20])
    with pytest.raises(MixedProvenanceError):
        run_dedup(DedupConfig(features=str(path), against=str(tmp_path / "root"), progress=False))
    with pytest.raises(InputError, match="--reference takes the extract output root of an evaluation set"):
        run_dedup(DedupConfig(features=str(tmp_path / "root"), reference=str(path), progress=False))


def test_evaluate_on_an_npy_with_keys_and_a_labels_file(planted, tmp_path):
    from pipeline.evaluate.run import EvalConfig, run_evaluate

    path, x, keys = planted
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\n" + "".join(f"{k},{k.split('/')[0]}\n" for k in keys))
    results = run_evaluate(EvalConfig(features=(str(path),), keys=str(path.parent / "keys.txt"), labels=str(labels),
                                      ks=(5,), linear=False))
    assert results.path == path.parent / "emb.npy.dinocurate" / "eval" / "results.json"
    assert results.record["labels"]["used"] == 60 and results.record["labels"]["val_exact_copies_in_train"] == 0
    run = results.record["runs"][0]
    assert run["provenance"]["source"] == "external" and run["dim"] == 64
    # folder labels come from the keys too: the same split and numbers
    again = run_evaluate(EvalConfig(features=(str(path),), keys=str(path.parent / "keys.txt"), ks=(5,),
                                    linear=False, out=str(tmp_path / "again")))
    assert again.record["runs"][0]["knn"]["by_k"][0]["top1"] == run["knn"]["by_k"][0]["top1"]
    with pytest.raises(InputError, match="folder part"):  # row-number keys: no ImageFolder classes
        run_evaluate(EvalConfig(features=(str(path),), ks=(5,), linear=False, out=str(tmp_path / "x")))


def test_index_update_and_export_refuse_features_made_elsewhere(planted, tmp_path):
    from pipeline.index.build import IndexConfig, run_index

    path, _, _ = planted
    with pytest.raises(ConfigError, match="rebuild the index"):
        run_index(IndexConfig(features=str(path), update=True, progress=False))
    with pytest.raises(MissingInputError, match="no images to read"):
        OutputRoot(path).source_shards()


# ------------------------------------------------------------------------------------------------ export-npy
def test_export_npy_streams_what_read_matrix_gives_and_writes_keys(tmp_path):
    x = clustered_vectors(23, 8, 3) * 5
    keys = write_feature_root(tmp_path / "root", x, per_shard=10, dtype="float16")
    done = run_export_npy(ExportNpyConfig(features=str(tmp_path / "root"), out=str(tmp_path / "emb"), batch_rows=4,
                                          feature="concat", progress=False)).record
    assert listing(tmp_path / "emb") == ["emb.npy", "emb.provenance.json", "keys.parquet"]  # no temporary left
    emb = np.load(tmp_path / "emb" / "emb.npy")
    expected = read_matrix(open_features(tmp_path / "root"), "concat")
    assert emb.dtype == np.float32 and emb.shape == (23, 16) == (done["rows"], done["dim"])
    np.testing.assert_array_equal(emb, expected)
    # read back as FEATURES: bit for bit what the root gives (normalising a unit row leaves it as it is)
    np.testing.assert_array_equal(read_matrix(open_features(tmp_path / "emb" / "emb.npy"), "cls"), expected)
    table = pq.read_table(tmp_path / "emb" / "keys.parquet")
    assert table.column_names == ["id", "key", "shard", "index"]
    assert table.column("key").to_pylist() == keys and table.column("id").to_pylist() == list(range(23))
    assert table.column("shard").to_pylist()[9:11] == ["part-0000", "part-0001"]
    import json

    about = json.loads(table.schema.metadata[EXPORT_KEY])
    assert about["normalised"] and about["feature"] == "concat" and about["provenance"]["model"] == "test"
    half = run_export_npy(ExportNpyConfig(features=str(tmp_path / "root"), out=str(tmp_path / "half"),
                                          dtype="float16", progress=False)).record
    emb16 = np.load(tmp_path / "half" / "emb.npy", mmap_mode="r")
    assert emb16.dtype == np.float16 and half["feature"] == "cls"
    np.testing.assert_allclose(emb16, read_matrix(open_features(tmp_path / "root"), "cls"), atol=1e-3)
    # an .npy in: keys only
    again = run_export_npy(ExportNpyConfig(features=str(tmp_path / "half" / "emb.npy"), out=str(tmp_path / "again"),
                                           keys=str(tmp_path / "half" / "keys.parquet"), progress=False)).record
    assert pq.read_table(again["keys"]).column_names == ["id", "key"]
    assert pq.read_table(again["keys"]).column("key").to_pylist() == keys


def test_export_npy_bad_options_are_user_errors(tmp_path):
    write_feature_root(tmp_path / "root", vectors(3))
    with pytest.raises(ConfigError, match="dtype"):
        ExportNpyConfig(features=str(tmp_path / "root"), out=str(tmp_path / "o"), dtype="float64")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        run_export_npy(ExportNpyConfig(features=str(tmp_path / "root"), out=str(tmp_path / "file"), progress=False))


def test_export_npy_and_keys_through_the_command_line(tmp_path, capsys):
    from jobs import export_npy, index

    write_feature_root(tmp_path / "root", vectors(9, 4))
    with pytest.raises(SystemExit) as exit_:
        export_npy.main(["--features", str(tmp_path / "root"), "--out", str(tmp_path / "emb"), "--dtype", "float16",
                         "--no-progress"])
    assert exit_.value.code == 0
    assert "export-npy: 9 × 4 float16 (cls, L2-normalised)" in capsys.readouterr().out
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(SystemExit) as exit_:
        index.main(["--features", str(tmp_path / "emb" / "emb.npy"), "--keys", str(tmp_path / "three.txt"),
                    "--no-progress"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --keys") and "holds 3 keys, the features 9 rows" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        index.main(["--features", str(tmp_path / "emb" / "emb.npy"), "--keys", str(tmp_path / "emb" / "keys.parquet"),
                    "--no-progress"])
    assert exit_.value.code == 0
    assert f"-> {tmp_path / 'emb' / 'emb.npy.dinocurate' / 'index'}" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is absent")
def test_make_targets_for_export_npy_and_curate_on_features():
    def dry(*args: str) -> str:
        proc = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "-m jobs.export_npy --features 'out x' --out 'emb dir'" in dry("export-npy", "FEATURES=out x", "OUT=emb dir")
    assert dry("export-npy", "ARGS=--help").strip().endswith("-m jobs.export_npy --help")
    assert "-m jobs.curate --pool 'e.npy'  --balanced 5" in dry("curate", "FEATURES=e.npy", "ARGS=--balanced 5")
    assert "--pool 'p'" in dry("curate", "POOL=p", "FEATURES=e.npy", "ARGS=--balanced 5")  # POOL wins


# ------------------------------------------------------------------------------------------------ acceptance
@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """A tiny extract root: 2 shards x 8 images through the tiny random-weight ViT."""
    from pipeline.extract.runner import run_extract

    base = tmp_path_factory.mktemp("acceptance")
    shards, _ = write_shards(base / "shards", 2, 8)
    stats = run_extract(tiny_config(base / "root", shards=tuple(shards)))
    assert not stats.failed
    return base / "root"


def test_round_trip_export_npy_then_curate_balanced_selects_the_same_images(extracted, tmp_path):
    from pipeline.curate.retrieval import CurateConfig, run_curate

    done = run_export_npy(ExportNpyConfig(features=str(extracted), out=str(tmp_path / "emb"), progress=False)).record
    emb = tmp_path / "emb" / "emb.npy"
    on_root = run_curate(CurateConfig(pool=str(extracted), balanced=10, out=str(tmp_path / "root_curate"),
                                      progress=False))
    on_npy = run_curate(CurateConfig(pool=str(emb), balanced=10, progress=False))
    a = pq.read_table(tmp_path / "root_curate" / "selected.parquet")
    b = pq.read_table(tmp_path / "emb" / "emb.npy.dinocurate" / "curate" / "selected.parquet")
    assert on_root.record["selected"] == on_npy.record["selected"] == 10
    assert b.column("id").to_pylist() == a.column("id").to_pylist()
    assert b.column("cluster").to_pylist() == a.column("cluster").to_pylist()
    assert b.column("key").to_pylist() == [str(i) for i in a.column("id").to_pylist()]  # row-number keys
    # `make curate FEATURES=emb.npy ARGS='--balanced N ...'`, keys from export-npy's keys.parquet: the same keys
    if shutil.which("make") is None:
        pytest.skip("make is absent")
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "curate", f"FEATURES={emb}",
                           f"ARGS=--balanced 10 --keys {done['keys']} --out {tmp_path / 'make_curate'} --no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = pq.read_table(tmp_path / "make_curate" / "selected.parquet")
    assert c.column("key").to_pylist() == a.column("key").to_pylist()
    assert c.column("id").to_pylist() == a.column("id").to_pylist()
