"""The one owner of an output root's layout: where every stage's files live, and reading their records.

    OUT/features/<shard>.parquet   OUT/failures/<shard>.parquet   OUT/_done/<shard>.json
    OUT/config.json  OUT/stats.json  OUT/index/  OUT/knn/  OUT/dedup/  OUT/curate/  OUT/eval/  OUT/report/
    OUT/review/decisions.parquet   OUT/apply/manifest-<time>.parquet

No other module joins these paths or opens `config.json`, `index.json`, `_graph.json` or a summary itself.
The format, for readers with other tools, is docs/FORMAT.md.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import pyarrow as pa

from pipeline.errors import ConfigMismatchError, InputError, MissingInputError
from pipeline.io.files import read_json, write_json_atomic, write_parquet_atomic
from pipeline.io.inputs import member_change, other_root_input, other_unit_input
from pipeline.io.lock import FileLock, is_locked, read_holder
from pipeline.provenance import carries, differences, same

log = logging.getLogger(__name__)

CONFIG, STATS, INDEX_RECORD, GRAPH_RECORD, SUMMARY = (
    "config.json", "stats.json", "index.json", "_graph.json", "summary.json")
# `_`: Parquet readers skip it, so that `pd.read_parquet("OUT/knn")` reads the parts; roots made before keep
# the data files of the index, dedup and curate folders (read by later stages, `make serve` and the report)
INDEX_FILE, IDS, GROUPS, SELECTED = "index.faiss", "ids.parquet", "groups.parquet", "selected.parquet"
INDEX_DIR, KNN_DIR = "index", "knn"  # in a root, and in a dedup or curate folder that built its own
OLD_GRAPH_RECORD = "graph.json"  # read when `_graph.json` is absent, removed when it is written
# Features made elsewhere (a .npy, a Parquet file or folder) have no output root: stages write into this sibling
EXTERNAL_OUTPUTS = ".dinocurate"  # emb.npy → emb.npy.dinocurate/{index,knn,dedup,curate,eval}/
NPY_EXPORT_FILES = ("emb.npy", "keys.parquet")  # what export-npy writes into its OUT
# beside a .npy (`emb.npy` → `emb.provenance.json`): what made its vectors, read back by every stage
NPY_PROVENANCE_SUFFIX = ".provenance.json"


def is_external(path: str | os.PathLike) -> bool:
    """Features made elsewhere: a file (.npy, .parquet), or a folder of Parquet files that is no extract output
    root (it has no features/ folder and no config.json)."""
    path = Path(path)
    if path.is_file():
        return True
    return (path.is_dir() and not (path / "features").is_dir() and not (path / CONFIG).exists()
            and any(p.suffix.lower() in (".parquet", ".pq") for p in path.iterdir()))


@functools.lru_cache(maxsize=32)
def _announce(features: str, root: str) -> None:
    log.info("%s is made elsewhere and has no output root: this stage writes under %s (--out to choose)",
             features, root)


def npy_export_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(emb.npy, keys.parquet) of an export-npy output folder."""
    return tuple(Path(out) / name for name in NPY_EXPORT_FILES)


def npy_provenance_path(npy: str | os.PathLike) -> Path:
    """The provenance sidecar of a .npy: `emb.npy` → `emb.provenance.json` in the same folder."""
    npy = Path(npy)
    return npy.with_name(npy.stem + NPY_PROVENANCE_SUFFIX)


def npy_keys_beside(npy: str | os.PathLike) -> Path:
    """Where export-npy puts the keys of a .npy: `keys.parquet` in its folder."""
    return Path(npy).with_name(NPY_EXPORT_FILES[1])


def _create_exclusive(path: Path, record: dict) -> bool:
    """Write `record` to `path` only if it does not exist yet, atomically (link of a complete temporary file:
    atomic on local file systems and NFS). False when it existed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.claim")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, tmp)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read_record(path: Path, unreadable: str = "ignored") -> dict | None:
    """A JSON record, or None when absent or unreadable (half-written records never exist: writes are atomic)."""
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        log.warning("unreadable record %s: %s", path, unreadable)
        return None


class OutputRoot:
    """One output root: its paths, its extract markers and config claim, and the records of later stages."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.features = self.root / "features"
        self.failures = self.root / "failures"
        self.done = self.root / "_done"
        self.config_path = self.root / CONFIG
        self.stats_path = self.root / STATS

    def __repr__(self) -> str:
        return f"OutputRoot({str(self.root)!r})"

    @classmethod
    def for_features(cls, features: str | os.PathLike) -> OutputRoot:
        """Where a stage writes by default for FEATURES: the extract root itself, or `<path>.dinocurate/` beside
        features made elsewhere (logged once), which have no root of their own."""
        path = Path(features)
        if not is_external(path):
            return cls(path)
        root = path.parent / (path.name + EXTERNAL_OUTPUTS)
        _announce(str(path), str(root))
        return cls(root)

    # ------------------------------------------------------------------ stage folders and their files
    index_dir = property(lambda self: self.root / INDEX_DIR)
    knn_dir = property(lambda self: self.root / KNN_DIR)
    dedup_dir = property(lambda self: self.root / "dedup")
    groups_path = property(lambda self: self.dedup_dir / GROUPS)  # one row per image: group, keep
    duplicates_csv_path = property(lambda self: self.root / "duplicates.csv")  # a folder's duplicate → kept file
    curate_dir = property(lambda self: self.root / "curate")
    eval_dir = property(lambda self: self.root / "eval")
    report_dir = property(lambda self: self.root / "report")
    apply_dir = property(lambda self: self.root / "apply")  # manifests of `apply` (files moved, for --undo)
    review_dir = property(lambda self: self.root / "review")  # decisions made by people in `make serve`
    decisions_path = property(lambda self: self.review_dir / "decisions.parquet")
    decisions_lock_path = property(lambda self: self.review_dir / "decisions.lock")

    # ------------------------------------------------------------------ extract files
    def feature_path(self, shard: str) -> Path:
        return self.features / f"{shard}.parquet"

    def failure_path(self, shard: str) -> Path:
        return self.failures / f"{shard}.parquet"

    def marker_path(self, shard: str) -> Path:
        return self.done / f"{shard}.json"

    def feature_files(self) -> list[Path]:
        """Feature files sorted by shard id: the order that assigns ids."""
        return sorted(self.features.glob("*.parquet"), key=lambda p: p.stem) if self.features.is_dir() else []

    def failure_files(self) -> list[Path]:
        return sorted(self.failures.glob("*.parquet"), key=lambda p: p.stem) if self.failures.is_dir() else []

    def has_features(self) -> bool:
        return bool(self.feature_files())

    # ------------------------------------------------------------------ config.json
    def read_config(self) -> dict | None:
        """`{"provenance": ..., "config": ...}` as the first extract run wrote it, or None."""
        return _read_record(self.config_path)

    def input_config(self) -> dict:
        """The extract config that made this root (inputs as absolute paths); an error when there is none."""
        record = self.read_config()
        if record is None and is_external(self.root):
            raise MissingInputError(f"{self.root} holds features made elsewhere (keys and vectors): there are no "
                                    f"images to read; this needs an extract output root (export --format uids "
                                    f"writes a selection's keys)")
        if record is None:
            raise MissingInputError(f"{self.root} has no {CONFIG}: not an extract output root (run extract first)")
        return record["config"]

    def source_shards(self) -> dict:
        """Shard id → Shard of the inputs this root was extracted from (re-listed from config.json)."""
        from pipeline.io.shards import create_folder_shards, create_shards

        config = self.input_config()
        if config.get("shards"):
            shards = create_shards(config["shards"], config.get("image_column"), config.get("key_column"))
        else:
            shards = create_folder_shards(config["images"], config.get("folder_shard_size", 1000))
        return {s.id: s for s in shards}

    def prepare(self) -> None:
        """Create the root, or say in one line why it cannot be written."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"output {self.root} exists and is a file, not a folder: choose another OUT")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder {self.root}: {exc.strerror or exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise InputError(f"output folder {self.root} is not writable (read-only file system or permissions): "
                             f"choose another OUT")

    def lock(self, rank: int = 0) -> FileLock:
        """The exclusive lock of one rank on this root (`with root.lock(rank):`), released when the process
        ends however it ends; a second run of the same rank is refused naming the holder. A run that fails
        while the root holds nothing but `_locks/` removes its lock file, and `_locks/` once empty."""
        return FileLock(self.root / "_locks" / f"rank-{rank}.lock", f"{self.root} (rank {rank})",
                        drop_on_failure=lambda: all(p.name == "_locks" for p in self.root.iterdir()))

    def other_runs(self, rank: int) -> list[dict | None]:
        """Holders of the other ranks' locks that are held now."""
        folder = self.root / "_locks"
        if not folder.is_dir():
            return []
        return [read_holder(p) for p in sorted(folder.glob("rank-*.lock"))
                if p.name != f"rank-{rank}.lock" and is_locked(p)]

    def claim(self, provenance: dict, config: dict, rank: int = 0) -> None:
        """Record config.json atomically (exactly one of two racing runs creates it), or check that the one
        there has the same fingerprint. A claim by a run that finished no shard is replaced when no other run
        holds this root: a failed first run does not bind the root to its settings."""
        record = {"provenance": provenance, "config": config}
        if _create_exclusive(self.config_path, record):
            return
        old = self.read_config() or {}
        old_prov = old.get("provenance", {})
        same_settings = same(old_prov, provenance)
        other_input = other_root_input(self.root, old.get("config") or {}, config)
        if same_settings and other_input is None:
            return
        if not self.markers() and not self.feature_files() and not self.other_runs(rank):
            log.warning("%s was claimed by a run that finished no shard (%s); replacing its settings", self.root,
                        "; ".join(differences(old_prov, provenance)) or other_input or "fingerprint only")
            write_json_atomic(record, self.config_path)
            return
        if not same_settings:
            diffs = differences(old_prov, provenance)
            raise ConfigMismatchError(
                f"{self.root} already holds features made another way; refusing to mix them. "
                f"Differences: {'; '.join(diffs) or 'fingerprint only'}. Use a new OUT, or delete {self.root}.")
        raise InputError(other_input)

    def foreign_shards(self) -> list[str]:
        """Shards whose marker was made with another fingerprint than config.json's (a mixed root)."""
        record = self.read_config()
        if record is None:
            return []
        fp = record["provenance"]["fingerprint"]
        return [m["shard"] for m in self.markers() if not carries(m, fp)]

    def repair(self) -> list[str]:
        """Drop every shard made with another fingerprint than config.json's (features, failures, marker),
        so that a rerun redoes them with the root's settings; returns their ids."""
        dropped = self.foreign_shards()
        for shard in dropped:
            for path in (self.marker_path(shard), self.feature_path(shard), self.failure_path(shard)):
                path.unlink(missing_ok=True)  # marker first: a shard without a marker is not done
        if dropped:
            log.warning("repair: dropped %d shards made with other settings: %s", len(dropped),
                        ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
        return dropped

    # ------------------------------------------------------------------ markers
    def read_marker(self, shard: str) -> dict | None:
        return _read_record(self.marker_path(shard), "the shard will be redone")

    def is_done(self, shard: str, fingerprint: str, digest: str | None, origin: dict | None = None,
                files: tuple[str, ...] = ()) -> bool:
        """Whether a unit is done with these settings, from this input (`Shard.origin`) and these members
        (`digest`; `files` name them, for the log). A unit done from another input is refused: one OUT never
        holds two inputs' units under one name. A unit whose members or file changed is redone, saying why."""
        marker = self.read_marker(shard)
        if marker is None:
            return False
        if not carries(marker, fingerprint):
            raise ConfigMismatchError(
                f"shard {shard} in {self.root} was made with other settings than this run (marker "
                f"{self.marker_path(shard).name}); the root is mixed. Rerun with --repair to drop the shards "
                f"made another way, or use a new OUT")
        held = marker.get("origin")  # absent in markers written before units were bound to their input
        if (other := other_unit_input(self.root, shard, held, origin)) is not None:
            raise InputError(other)
        if marker.get("digest") != digest:
            log.warning("%s: %s since the last run: redoing it", shard,
                        member_change(self.held_keys(shard) if files else set(), files))
            return False
        if held and origin and held.get("stamp") != origin.get("stamp"):
            log.warning("%s: %s changed (size or mtime) since the last run: redoing it", shard, origin["input"])
            return False
        return self.feature_path(shard).exists() and self.failure_path(shard).exists()

    def held_keys(self, shard: str) -> set[str]:
        """Keys of a unit's rows and failed samples as written (a folder chunk's members)."""
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for path in (self.feature_path(shard), self.failure_path(shard)):
            if path.exists():
                keys.update(k for k in pq.read_table(path, columns=["key"]).column("key").to_pylist() if k)
        return keys

    def write_shard(self, shard: str, features: pa.Table, failures: pa.Table, marker: dict) -> None:
        """Data files first (atomically), the marker last: a shard with a marker is complete."""
        write_parquet_atomic(features, self.feature_path(shard))
        write_parquet_atomic(failures, self.failure_path(shard))
        write_json_atomic(marker, self.marker_path(shard))

    def markers(self) -> list[dict]:
        if not self.done.exists():
            return []
        return [m for p in sorted(self.done.glob("*.json")) if (m := self.read_marker(p.stem)) is not None]

    def write_stats(self, run: dict) -> dict:
        """Merge every marker into stats.json (totals, failures by reason, damaged shards) plus this run."""
        markers = self.markers()
        reasons: dict[str, int] = {}
        for m in markers:
            for reason, n in m.get("failures_by_reason", {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
        stats = {
            "shards_done": len(markers),
            "samples": sum(m["samples"] for m in markers),
            "rows": sum(m["rows"] for m in markers),
            "failures": sum(m["failures"] for m in markers),
            "failures_by_reason": dict(sorted(reasons.items())),
            "damaged": sum(1 for m in markers if m.get("damage")),
            "damaged_shards": {m["shard"]: m["damage"] for m in markers if m.get("damage")},
            "last_run": run,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json_atomic(stats, self.stats_path)
        return stats

    def read_stats(self) -> dict | None:
        return _read_record(self.stats_path)


# ---------------------------------------------------------------------- records of later stages
def resolve_index_dir(path: str | os.PathLike) -> Path:
    """An index folder, given it or the output root that holds it in `index/`."""
    path = Path(path)
    if (path / INDEX_DIR).is_dir() and not (path / INDEX_FILE).exists():
        return path / INDEX_DIR
    return path


def read_index_record(index_dir: str | os.PathLike) -> dict | None:
    """`index.json` of an index folder (or of the root holding `index/`), or None."""
    return _read_record(resolve_index_dir(index_dir) / INDEX_RECORD)


def write_index_record(index_dir: str | os.PathLike, record: dict) -> None:
    write_json_atomic(record, Path(index_dir) / INDEX_RECORD)


def read_graph_record(graph_dir: str | os.PathLike) -> dict | None:
    """`_graph.json` of a k-NN graph folder (`graph.json` in one made before), or None."""
    record = _read_record(Path(graph_dir) / GRAPH_RECORD)
    return record if record is not None else _read_record(Path(graph_dir) / OLD_GRAPH_RECORD)


def write_graph_record(graph_dir: str | os.PathLike, record: dict) -> None:
    """Write `_graph.json` (no non-Parquet file among the parts), replacing an older folder's `graph.json`."""
    write_json_atomic(record, Path(graph_dir) / GRAPH_RECORD)
    (Path(graph_dir) / OLD_GRAPH_RECORD).unlink(missing_ok=True)


def graph_part_paths(graph_dir: str | os.PathLike, part: int) -> tuple[Path, Path]:
    """(`part-NNNNN.parquet`, its marker `_done/part-NNNNN.json`) of one part of a k-NN graph folder."""
    return Path(graph_dir) / f"part-{part:05d}.parquet", Path(graph_dir) / "_done" / f"part-{part:05d}.json"


def graph_part_files(graph_dir: str | os.PathLike) -> list[Path]:
    """The parts of a k-NN graph folder, in id order."""
    return sorted(Path(graph_dir).glob("part-*.parquet"))


def graph_parts_done(graph_dir: str | os.PathLike) -> int:
    return len(list((Path(graph_dir) / "_done").glob("part-*.json")))


def read_summary(stage_dir: str | os.PathLike) -> dict | None:
    """`summary.json` of a dedup or curate folder, or None."""
    return _read_record(Path(stage_dir) / SUMMARY)


def write_summary(stage_dir: str | os.PathLike, summary: dict) -> None:
    write_json_atomic(summary, Path(stage_dir) / SUMMARY)


def features_root_of_index(index_dir: str | os.PathLike) -> str | None:
    """The extract output root an index was built from (as its record says), or None."""
    record = read_index_record(index_dir)
    return record.get("features") if record else None


def index_vectors_path(index_dir: str | os.PathLike, feature: str, digest: str) -> Path:
    """`make serve`'s random-access copy of an index's stored vectors (id order), named by what it copies."""
    return resolve_index_dir(index_dir) / f"vectors-{feature}-{digest}.npy"
