"""`--where` (pipeline/roots/where.py): hostile text refused as a parse error, results equal to NumPy masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import ConfigError, UserError
from pipeline.roots.features import open_features
from pipeline.roots.where import matching_rows, parse_where, read_rows, row_columns
from tests.conftest import clustered_vectors, write_feature_root

N = 300


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(3)
    sharp = rng.gamma(2.0, 40.0, N).astype(np.float32)
    sharp_mask = rng.random(N) < 0.05  # some rows without a value
    return pa.table({
        "key": [f"k{i:03d}" for i in range(N)],
        "shard": rng.choice(["a", "b", "c"], N).tolist(),
        "width": pa.array(rng.integers(32, 1024, N), pa.int32()),
        "height": pa.array(rng.integers(32, 1024, N), pa.int32()),
        "sharpness": pa.array(sharp, pa.float32(), mask=sharp_mask),
        "brightness": pa.array(rng.random(N), pa.float32()),
    })


def arrays(t: pa.Table) -> dict[str, np.ndarray]:
    out = {c: t.column(c).to_numpy(zero_copy_only=False) for c in ("key", "shard", "width", "height", "brightness")}
    out["sharpness"] = t.column("sharpness").fill_null(np.nan).to_numpy()  # NaN compares False, as null
    return out


# expression → the same filter in NumPy
CASES = {
    "width >= 256 and sharpness > 50": lambda a: (a["width"] >= 256) & (a["sharpness"] > 50),
    "width >= 256 or not brightness < 0.5": lambda a: (a["width"] >= 256) | ~(a["brightness"] < 0.5),
    "0.2 < brightness <= 0.7": lambda a: (a["brightness"] > 0.2) & (a["brightness"] <= 0.7),
    "width / height > 1.5": lambda a: a["width"] / a["height"] > 1.5,
    "width * height >= 250000 and shard != 'b'": lambda a: (a["width"].astype(float) * a["height"] >= 250000)
    & (a["shard"] != "b"),
    "shard in ['a', 'c']": lambda a: np.isin(a["shard"], ["a", "c"]),
    "shard not in ('a',)": lambda a: a["shard"] != "a",
    "key == 'k007' or key == \"k100\"": lambda a: np.isin(a["key"], ["k007", "k100"]),
    "-width < -500": lambda a: -a["width"] < -500,
    "(width - 100) * 2 > height + 10 and True": lambda a: (a["width"] - 100.0) * 2 > a["height"] + 10,
    "width in [32, 33, 1023]": lambda a: np.isin(a["width"], [32, 33, 1023]),
    "sharpness > -1": lambda a: a["sharpness"] > -1,  # null rows never match
    "False": lambda a: np.zeros(N, bool),
}


@pytest.mark.parametrize("text", sorted(CASES))
def test_valid_expressions_keep_exactly_the_rows_a_numpy_mask_keeps(table, text):
    want = np.flatnonzero(CASES[text](arrays(table)))
    got = matching_rows(table, parse_where(text))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64


MALICIOUS = {
    "__import__('os').system('touch PWNED')": "function calls",
    "().__class__": "attribute access",
    "().__class__.__bases__[0].__subclasses__()": "function calls",
    "open('/etc/passwd')": "function calls",
    "a if b else c": "conditional expressions",
    "lambda: 1": "lambda",
    "(lambda: __import__('os'))()": "function calls",
    "[x for x in width]": "comprehensions",
    "width[0] > 1": "subscripts",
    "width.real > 1": "attribute access",
    "__builtins__ > 1": "dunder",
    "width ** 99999999 > 1": "operator Pow",
    "width is None": "comparison Is",
    "width == None": "None is not",
    "key in width": "literal list",
    "(w := 1)": "assignment",
    "f'{width}' == 'x'": "f-strings",
    "import os": "not an expression",
    "width > 1; import os": "not an expression",
    "": "empty",
    "(" * 300 + "1" + ")" * 300: "not an expression",
}


@pytest.mark.parametrize("text", sorted(MALICIOUS))
def test_hostile_expressions_are_refused_as_parse_errors(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_where(text)
    message = str(info.value)
    assert message.startswith("cannot parse --where") and MALICIOUS[text] in message, message
    assert "\n" not in message and isinstance(info.value, UserError)
    assert not (tmp_path / "PWNED").exists()


def test_a_very_long_chain_is_refused_or_compiled_never_a_crash(table):
    with pytest.raises(ConfigError, match="longer than"):
        parse_where("width > 1 and " * 300 + "True")
    deep = parse_where("+".join(["width"] * 330) + " > 1")  # 330 levels of BinOp, within the length limit
    assert len(matching_rows(table, deep)) == N


def test_an_unknown_column_names_the_available_ones(table):
    where = parse_where("width > 10 and sharpnes > 3 and blur < 2")
    assert where.columns == ("width", "sharpnes", "blur")
    with pytest.raises(ConfigError) as info:
        matching_rows(table, where)
    message = str(info.value)
    assert "no column 'sharpnes', 'blur'" in message
    assert "available: key, shard, width, height, sharpness, brightness" in message


@pytest.mark.parametrize("text,why", [("key > 3", "has no kernel"), ("width", "must evaluate to bool")])
def test_a_type_mismatch_is_a_user_error_naming_the_types(table, text, why):
    with pytest.raises(ConfigError) as info:
        matching_rows(table, parse_where(text))
    assert why in str(info.value) and "cannot evaluate --where" in str(info.value)


def test_a_feature_root_offers_its_scalar_columns_and_id(tmp_path):
    vectors = clustered_vectors(120, 16, 4)
    keys = write_feature_root(tmp_path / "root", vectors, per_shard=50, pixels=np.arange(120) * 10)
    fs = open_features(tmp_path / "root")
    columns = row_columns(fs)
    assert columns == ["key", "shard", "index", "width", "height", "sha1", "phash", "phash_mirror", "phash_flip",
                       "phash_rot180", "id"]  # no vector column
    assert read_rows(fs, ["id"]).column("id").to_pylist() == list(range(120))  # no stored column read
    rows = read_rows(fs, ["id", "width", "key", "index"])
    assert rows.column_names == ["id", "width", "key", "index"] and rows.num_rows == 120
    assert rows.column("key").to_pylist() == keys and rows.column("id").to_pylist() == list(range(120))
    kept = matching_rows(rows, parse_where("width >= 500 and id < 100 and index < 30"))
    ids = np.arange(120)
    np.testing.assert_array_equal(kept, ids[(ids * 10 >= 500) & (ids < 100) & (ids % 50 < 30)])
