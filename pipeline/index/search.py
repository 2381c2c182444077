"""k-NN search of an index with images, folders, shards or feature roots, extracted as the index was."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError, MissingInputError, MixedProvenanceError, WeightsError
from pipeline.extract.config import EXTRA_COLUMNS, ExtractConfig
from pipeline.index.build import LoadedIndex, load_index, search
from pipeline.index.config import SearchConfig as SearchConfig  # its import path before config.py held it
from pipeline.io.files import atomic_write, write_parquet_atomic
from pipeline.io.shards import is_url
from pipeline.layout import OutputRoot
from pipeline.provenance import made_elsewhere, require_comparable, require_same
from pipeline.roots.features import open_features, read_matrix, read_meta, shown_similarity

log = logging.getLogger(__name__)

QUERY_METADATA = b"dinocurate.search"  # a result Parquet's schema metadata: {"query": where the queries came from}
RESULT_SCHEMA = pa.schema([("query", pa.string()), ("rank", pa.int32()), ("key", pa.string()),
                           ("shard", pa.string()), ("index", pa.int32()), ("similarity", pa.float32())])


def config_from_provenance(prov: dict, out: str, **inputs) -> ExtractConfig:
    """The extract config that reproduces an index's features: same model, weights and preprocessing."""
    weights = prov["weights"]
    source = weights["source"]
    if source == "random":
        spec = "random"
    elif source == "hub":
        spec = "hub"
    else:
        spec = weights["path"]
        if not spec or not os.path.isfile(spec):
            raise WeightsError(f"the index was built from weights {spec!r}, which are not here; "
                                    f"queries must use the same weights")
    input_size = prov["input_size"]
    defaults = {f.name: f.default for f in fields(ExtractConfig)}
    return ExtractConfig(
        out=out, model=prov["model"], weights=spec, model_kwargs=tuple(sorted(prov.get("model_kwargs", {}).items())),
        resolution=int(max(input_size[1:])), crop_pct=prov.get("crop_pct"),
        resize_mode=prov.get("resize_mode", "fixed"),
        precision=prov.get("precision", "fp32"), dtype=prov.get("dtype", "float16"),
        jpeg_draft=prov.get("jpeg_draft", True), extras=extras_of(prov),
        keep_columns=tuple(prov.get("keep_columns") or ()),
        last_layers=prov.get("last_layers") or defaults["last_layers"],
        gem_p=prov.get("gem_p") or defaults["gem_p"],
        progress=False, **inputs)


def extras_of(prov: dict) -> tuple[str, ...]:
    """The `--extras` that made these features (they are in the fingerprint): feature columns beyond cls and
    patch_mean, and the quality signals when the provenance defines them."""
    made = set(prov.get("features", ()))
    return tuple(extra for extra, column in EXTRA_COLUMNS.items() if column in made) + (
        ("stats",) if "stats" in prov else ())


def query_features(loaded: LoadedIndex, query: str, work: Path) -> tuple[list[str], np.ndarray]:
    """(query keys, normalised vectors) for an image file, image folder, shard spec or feature root."""
    prov = loaded.record["provenance"]
    feature = loaded.record["feature"]
    path = Path(query)
    if OutputRoot(path).features.is_dir():
        fs = open_features(path)
        require_same(prov, fs.provenance, "the index's features", query, MixedProvenanceError)
        return read_meta(fs, ("key",)).column("key").to_pylist(), read_matrix(fs, feature)
    if not path.exists() and not _looks_like_shards(query):
        raise MissingInputError(f"query {query!r} does not exist (an image, an image folder, shards or an "
                                f"extract output)")
    if path.is_file() and path.suffix.lower() == ".npy":
        return _vector_queries(loaded, path)
    if path.is_file() and not path.name.endswith((".tar", ".txt", ".list")):
        folder = work / "query_image"
        folder.mkdir(parents=True)
        shutil.copy2(path, folder / path.name)  # read as a folder of one image
        inputs = {"images": str(folder)}
    elif path.is_dir():
        inputs = {"images": str(path)}
    else:
        inputs = {"shards": (query,)}
    cfg = config_from_provenance(prov, str(work / "extract"), **inputs)
    from pipeline.extract.runner import run_extract  # loads torch: only when a query is extracted

    try:
        run_extract(replace(cfg, workers=0))
    except MissingInputError as exc:  # "no image files in <the temporary folder>": say what the file is not
        if inputs.get("images") != str(work / "query_image"):
            raise
        raise InputError(f"query {query} is not an image (no image format Pillow reads); give an image, an image "
                         f"folder, shards or an extract output") from exc
    failures = _failures(OutputRoot(work / "extract"))
    for f in failures:
        log.warning("query %s skipped: %s (%s)", f["key"] or f["shard"], f["reason"], f["detail"])
    try:
        fs = open_features(work / "extract")
    except MissingInputError:
        fs = None
    if fs is None or fs.count == 0:
        why = "; ".join(f"{f['key'] or f['shard']}: {f['reason']}" for f in failures[:10]) or "no image found"
        raise InputError(f"no usable query image in {query} ({why})")
    require_same(prov, fs.provenance, "the index's features", "the query features", MixedProvenanceError)
    keys = read_meta(fs, ("key",)).column("key").to_pylist()
    return keys, read_matrix(fs, feature)


def _vector_queries(loaded: LoadedIndex, path: Path) -> tuple[list[str], np.ndarray]:
    """A .npy of vectors: the queries themselves for an index of features made elsewhere (of the same width);
    for an index of images extracted here it is no query image, and such vectors never mix with its features."""
    prov = loaded.record["provenance"]
    if not made_elsewhere(prov):
        raise InputError(f"query {path} is a .npy of vectors, not a query image: this index holds features "
                         f"extracted here, which vectors made elsewhere cannot be compared with; give an image, an "
                         f"image folder, shards or an extract output")
    fs = open_features(path)
    require_comparable(prov, fs.provenance, "the index's features", str(path), MixedProvenanceError)
    return read_meta(fs, ("key",)).column("key").to_pylist(), read_matrix(fs, loaded.record["feature"])


def _looks_like_shards(query: str) -> bool:
    """A shard spec that need not exist as one path: a URL, a pipe, a brace pattern or a glob."""
    return is_url(query) or any(ch in query for ch in "{*?[")


def _failures(root: OutputRoot) -> list[dict]:
    """Every failure row of a (temporary) query extraction, and every shard that could not be read."""
    rows = [r for f in root.failure_files() for r in pq.read_table(f).to_pylist()]
    stats = root.read_stats() or {}
    rows += [{"key": "", "shard": s, "reason": "unreadable shard", "detail": "see the log above"}
             for s in stats.get("last_run", {}).get("failed", [])]
    return rows


def run_search(index_dir: str, query: str, k: int = 10) -> pa.Table:
    """Top-k neighbours of every query image: one row per (query, rank)."""
    loaded = load_index(index_dir)
    with tempfile.TemporaryDirectory(prefix="search-") as work:
        keys, vectors = query_features(loaded, query, Path(work))
    sims, ids = search(loaded.index, vectors, k)
    meta = loaded.ids
    rows = {name: [] for name in RESULT_SCHEMA.names}
    key_col, shard_col, index_col = (meta.column(c).to_pylist() for c in ("key", "shard", "index"))
    for q, key in enumerate(keys):
        for rank, (i, s) in enumerate(zip(ids[q], sims[q])):
            if i < 0:
                continue
            rows["query"].append(key)
            rows["rank"].append(rank + 1)
            rows["key"].append(key_col[i])
            rows["shard"].append(shard_col[i])
            rows["index"].append(index_col[i])
            rows["similarity"].append(shown_similarity(s))
    return pa.table(rows, schema=RESULT_SCHEMA)


def format_results(table: pa.Table) -> str:
    """The results as text: per query, its neighbours with rank, similarity, key and shard."""
    rows = table.to_pylist()
    width = max([len(r["key"]) for r in rows] + [3])
    lines: list[str] = []
    current = None
    for r in rows:
        if r["query"] != current:
            current = r["query"]
            lines += ["", f"query: {current}", f"  {'rank':>4}  {'similarity':>10}  {'key':<{width}}  shard"]
        lines.append(f"  {r['rank']:>4}  {r['similarity']:>10.4f}  {r['key']:<{width}}  {r['shard']}")
    return "\n".join(lines)


def write_results(table: pa.Table, path: str | os.PathLike, query: str | None = None) -> None:
    """The results as Parquet (`.parquet`) or CSV (anything else), written atomically. Parquet records where the
    queries came from (`query`, made absolute) in its schema metadata, so that the report shows their images."""
    import json

    import pyarrow.csv as pacsv

    if str(path).endswith(".parquet"):
        if query is not None:
            where = query if is_url(query) else os.path.abspath(query)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   QUERY_METADATA: json.dumps({"query": where}).encode()})
        write_parquet_atomic(table, path)
    else:
        atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))
