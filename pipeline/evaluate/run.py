"""Frozen-feature evaluation: DINO's weighted k-NN and a linear probe on labelled keys, stamped with provenance."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError, InputError, MissingInputError
from pipeline.io.features import FEATURE_CHOICES, FeatureSet, open_features, read_matrix, read_meta
from pipeline.io.files import write_json_atomic
from pipeline.layout import OutputRoot
from pipeline.provenance import differing_fields

log = logging.getLogger(__name__)

KS = (10, 20, 100, 200)  # DINO's eval_knn.py
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SPLITS = ("train", "val")
TOP = 5
_CHUNK = 65536  # rows per logits chunk in the linear probe (bounds memory at CHUNK x classes floats)
_SMALL = 1 << 24  # rows x dim x classes below which torch runs on one thread (sync costs more than it saves)
WEBDATASET_LABELS = (
    "these features come from webdataset shards: their `cls`/`txt` members are not stored with the "
    "features, so labels cannot be read from them. Write a labels file with columns key,label[,split] "
    "(CSV or Parquet; key = the sample's __key__) and pass --labels FILE")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: several feature roots x feature kinds, all with the same labels and split."""

    features: tuple[str, ...]  # extract output roots
    labels: str = "folder"  # "folder" (first path component of a folder extract's key) or a .csv/.parquet file
    feature: tuple[str, ...] = ("cls",)
    ks: tuple[int, ...] = KS
    temperature: float = 0.07
    val_fraction: float = 0.2  # seeded stratified split, when the labels file has no `split` column
    seed: int = 0
    knn: bool = True
    linear: bool = True
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS
    heldout_fraction: float = 0.2  # of train, to choose the weight decay
    max_iter: int = 100  # L-BFGS iterations per fit
    out: str | None = None  # folder; default FEATURES[0]/eval

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("give at least one feature root")
        bad = set(self.feature) - set(FEATURE_CHOICES)
        if bad or not self.feature:
            raise ConfigError(f"feature must be among {FEATURE_CHOICES}, got {list(self.feature)}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"k values must be >= 1, got {list(self.ks)}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")
        for name in ("val_fraction", "heldout_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ConfigError("weight decays must be >= 0")
        if not (self.knn or self.linear):
            raise ConfigError("nothing to do: both k-NN and the linear probe are off")

    def protocol(self) -> dict:
        """Settings that change the numbers besides the data (labels and split have their own digest)."""
        return {"ks": list(self.ks), "temperature": self.temperature, "weight_decays": list(self.weight_decays),
                "heldout_fraction": self.heldout_fraction, "max_iter": self.max_iter, "seed": self.seed}


@dataclass(frozen=True)
class Split:
    """Labelled keys present in every feature root, sorted; class indices; which rows are val."""

    keys: tuple[str, ...]
    y: np.ndarray
    classes: tuple[str, ...]
    is_val: np.ndarray
    mode: str  # "given" (labels file) or "seeded" (stratified)
    rows: tuple[np.ndarray, ...]  # per feature root: its row id of each key

    def digest(self) -> str:
        """Changes when any key, label or train/val assignment does: equal digests, same evaluation data."""
        h = hashlib.sha256()
        for key, c, v in zip(self.keys, self.y, self.is_val):
            h.update(f"{key}\t{self.classes[c]}\t{SPLITS[int(v)]}\n".encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------- labels and split

def read_label_file(path: str | Path) -> tuple[dict[str, str], dict[str, str] | None]:
    """key → label (and key → train|val when there is a `split` column) from a CSV or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"labels file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    else:
        types = {name: pa.string() for name in ("key", "label", "split")}
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    missing = {"key", "label"} - set(table.column_names)
    if missing:
        raise InputError(f"{path} needs columns key and label (and optionally split); it has {table.column_names}")
    keys = table.column("key").cast(pa.string()).to_pylist()
    labels = table.column("label").cast(pa.string()).to_pylist()
    splits = table.column("split").cast(pa.string()).to_pylist() if "split" in table.column_names else None
    out: dict[str, str] = {}
    split_of: dict[str, str] = {}
    empty, conflicts = 0, []
    for i, (key, label) in enumerate(zip(keys, labels)):
        if key is None or label is None or not label.strip():
            empty += 1
            continue
        if key in out and out[key] != label:
            conflicts.append(f"{key!r}: {out[key]!r} vs {label!r}")
        out[key] = label
        if splits is not None:
            s = (splits[i] or "").strip().lower()
            if s not in SPLITS:
                raise InputError(f"{path}: key {key!r} has split {splits[i]!r}; the split column takes train or val")
            split_of[key] = s
    if conflicts:
        raise InputError(f"{path} gives {len(conflicts)} keys two labels, e.g. {conflicts[:3]}")
    if empty:
        log.warning("labels file %s: %d rows without a key or label ignored", path, empty)
    return out, (split_of if splits is not None else None)


def folder_labels(root: Path, keys: list[str]) -> dict[str, str]:
    """ImageFolder convention: the label of `class_name/.../file.jpg` is `class_name`."""
    record = OutputRoot(root).read_config()
    if record is not None and record.get("config", {}).get("images") is None:
        raise InputError(f"{root}: {WEBDATASET_LABELS}")
    labels = {k: k.split("/", 1)[0] for k in keys if "/" in k}
    if not labels:
        raise InputError(f"no key of {root} has a folder part (class_name/file): --labels folder needs an "
                         f"ImageFolder-style tree; else pass --labels FILE (columns key,label[,split])")
    return labels


def stratified_val(y: np.ndarray, classes: tuple[str, ...], fraction: float, seed: int,
                   salt: str = "val") -> np.ndarray:
    """Seeded per-class draw of round(n·fraction) val rows, at most n-1: a class of one stays in train.

    Each class has its own generator (seed, salt, class name), so adding a class leaves the others' split alone.
    """
    is_val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_val = min(math.floor(len(idx) * fraction + 0.5), len(idx) - 1)
        if n_val > 0:
            rng = np.random.default_rng([seed, zlib.crc32(f"{salt}:{classes[c]}".encode())])
            is_val[rng.choice(idx, n_val, replace=False)] = True
    return is_val


def resolve_split(cfg: EvalConfig, sets: list[FeatureSet]) -> tuple[Split, dict]:
    """Join labels with every root's keys; drop (and count) what cannot be used; split train/val."""
    report: dict = {"roots": []}
    rows_by_set, sha1_by_set = zip(*(_key_rows(fs) for fs in sets))
    sha1 = sha1_by_set[0]
    if cfg.labels in ("cls", "txt"):
        raise InputError(WEBDATASET_LABELS)
    if cfg.labels == "folder":
        labels: dict[str, str] = {}
        for fs, rows in zip(sets, rows_by_set):
            labels.update(folder_labels(fs.root, list(rows)))
        given = None
    else:
        labels, given = read_label_file(cfg.labels)
    common = set(labels)
    for fs, rows in zip(sets, rows_by_set):
        unlabelled = len(rows.keys() - labels.keys())
        absent = labels.keys() - rows.keys()
        failed = len(absent & _failed_keys(fs.root))
        report["roots"].append({"root": str(fs.root), "rows": fs.count, "duplicate_keys": fs.count - len(rows),
                                "keys_without_label": unlabelled, "labels_without_features": len(absent),
                                "of_which_failed_extraction": failed})
        if unlabelled:
            log.warning("%s: %d of %d keys have no label: left out", fs.root, unlabelled, len(rows))
        if absent:
            log.warning("%s: %d labelled keys have no features (%d of them failed extraction, see failures/): "
                        "left out%s", fs.root, len(absent), failed,
                        " of every feature set, so all see the same images" if len(sets) > 1 else "")
        common &= rows.keys()
    if not common:
        raise InputError("no labelled key has features: check that the labels file's keys are the features' keys "
                         f"(e.g. {next(iter(rows_by_set[0]), None)!r})")
    keys = tuple(sorted(common))
    classes = tuple(sorted({labels[k] for k in keys}))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[labels[k]] for k in keys], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    if given is not None:
        mode, is_val = "given", np.array([given[k] == "val" for k in keys])
        log.info("split given by the labels file's `split` column (--val-fraction unused)")
    else:
        mode, is_val = "seeded", stratified_val(y, classes, cfg.val_fraction, cfg.seed)
        singles = int((counts == 1).sum())
        if singles:
            log.warning("%d classes have a single image: kept in train (a stratified split cannot put them in "
                        "both train and val)", singles)
    train_classes = set(y[~is_val].tolist())
    orphans = int(sum(1 for c in y[is_val] if c not in train_classes))
    if orphans:
        log.warning("%d val images belong to classes with no train image: no method can get them right", orphans)
    if is_val.all() or not is_val.any():
        raise InputError(f"the split leaves {'train' if is_val.all() else 'val'} empty ({len(keys)} labelled "
                         f"images, {len(classes)} classes): give more images per class or a larger --val-fraction")
    train_bytes = {sha1[k] for k, v in zip(keys, is_val) if not v}
    copies = sum(1 for k, v in zip(keys, is_val) if v and sha1[k] in train_bytes)
    if copies:
        log.warning("%d val images have a byte-identical copy in train: they inflate every method's score "
                    "(dedup the set first for a clean number)", copies)
    train_counts = np.bincount(y[~is_val], minlength=len(classes))
    report.update(used=len(keys), classes=len(classes), train=int((~is_val).sum()), val=int(is_val.sum()),
                  single_image_classes=int((counts == 1).sum()), val_without_train_class=orphans,
                  val_exact_copies_in_train=copies,
                  majority_top1=float((y[is_val] == train_counts.argmax()).mean()))
    log.info("%d labelled images in %d classes: %d train, %d val (%s split)", len(keys), len(classes),
             report["train"], report["val"], mode)
    rows = tuple(np.array([r[k] for k in keys], dtype=np.int64) for r in rows_by_set)
    return Split(keys, y, classes, is_val, mode, rows), report


def _key_rows(fs: FeatureSet) -> tuple[dict[str, int], dict[str, bytes]]:
    """key → row id (the first row of a repeated key) and key → SHA-1 of the encoded image."""
    meta = read_meta(fs, ("key", "sha1"))
    keys, sha1 = meta.column("key").to_pylist(), meta.column("sha1").to_pylist()
    rows: dict[str, int] = {}
    for i, k in enumerate(keys):
        rows.setdefault(k, i)
    if len(rows) < len(keys):
        log.warning("%s: %d rows repeat an earlier key; the first row of each key is used",
                    fs.root, len(keys) - len(rows))
    return rows, {k: sha1[i] for k, i in rows.items()}


def _failed_keys(root: Path) -> set[str]:
    files = OutputRoot(root).failure_files()
    return {k for f in files for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}


# ---------------------------------------------------------------- weighted k-NN

def knn_predict(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, num_classes: int,
                ks: tuple[int, ...] = KS, temperature: float = 0.07,
                batch_bytes: int = 1 << 28) -> dict[int, np.ndarray]:
    """DINO's weighted k-NN: per k, (N_val, min(5, C)) classes ranked by Σ exp(cos/T) over the k neighbours.

    Neighbours rank by similarity, ties by lower train row; classes by summed vote, ties by lower class
    index; slots past the classes that got a vote are -1 (never counted as hits). k is capped at the train size.
    """
    n = len(train_x)
    kmax = min(max(ks), n)
    top = min(TOP, num_classes)
    out = {k: np.empty((len(val_x), top), dtype=np.int64) for k in ks}
    step = max(1, min(4096, batch_bytes // (4 * max(n, 1))))
    for start in range(0, len(val_x), step):
        sl = slice(start, start + step)
        nb, sims = _neighbours(val_x[sl], train_x, kmax)
        for k in ks:
            kk = min(k, n)
            out[k][sl] = vote(sims[:, :kk], train_y[nb[:, :kk]], num_classes, temperature, top)
    return out


def _neighbours(q: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar train rows of each query, ranked, ties by row; similarities exact to float32.

    float32 BLAS scores of the same pair vary with batch and row position (~1e-7), so every row within a
    proven error bound of the k-th is re-scored in float64 and rounded: a query's neighbours and their order
    do not depend on batching, and duplicate train vectors tie exactly.
    """
    n, d = train.shape
    s32 = q @ train.T
    cand = np.broadcast_to(np.arange(n), s32.shape)
    if k < n:
        tol = (d + 2) * np.finfo(np.float32).eps  # |float32 dot - exact| <= d·u·|a||b| for unit vectors
        width = min(n, k + 16)
        while True:  # widen until every row that could be in the top k is among the candidates
            vals, idx = torch.topk(torch.from_numpy(s32), width, dim=1)
            if width == n or bool((vals[:, -1] < vals[:, k - 1] - tol).all()):
                break
            width = min(n, 2 * width)
        cand = idx.numpy()
    exact = exact_similarity(q, train, cand)
    order = np.lexsort((cand, -exact), axis=1)[:, :k]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1)


def exact_similarity(q: np.ndarray, train: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """float32(float64 dot) of each query with its candidate train rows, in bounded-memory chunks."""
    out = np.empty(cand.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, cand.shape[1] * train.shape[1]))
    for s in range(0, len(q), step):
        out[s:s + step] = np.einsum("bmd,bd->bm", train[cand[s:s + step]], q[s:s + step], dtype=np.float64)
    return out


def vote(sims: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float, top: int) -> np.ndarray:
    """Each neighbour adds exp(sim/T) to its class; the `top` best classes (-1 where no vote was cast)."""
    b, k = labels.shape
    weights = np.exp(sims.astype(np.float64) / temperature)
    flat = (np.arange(b)[:, None] * num_classes + labels).ravel()
    scores = np.bincount(flat, weights=weights.ravel(), minlength=b * num_classes).reshape(b, num_classes)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return np.where(np.take_along_axis(scores, ranked, 1) > 0, ranked, -1)


def accuracy(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) of ranked predictions (N, ≤5)."""
    hit = pred == y[:, None]
    return float(hit[:, 0].mean()), float(hit.any(1).mean())


# ---------------------------------------------------------------- linear probe

@dataclass(frozen=True)
class LinearModel:
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(x) - self.mean) / self.scale) @ self.weight.T + self.bias


def fit_linear(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float, max_iter: int = 100,
               init: LinearModel | None = None) -> LinearModel:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (convex: one optimum).

    Loss = mean cross-entropy + weight_decay/2·|W|² (bias not decayed); zero init, or warm start from `init`.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y)
    mean, scale = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    z = (xt - mean) / scale
    w = torch.zeros(num_classes, x.shape[1]) if init is None else init.weight.clone()
    b = torch.zeros(num_classes) if init is None else init.bias.clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)
    n = len(z)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        total = 0.0
        for s in range(0, n, _CHUNK):
            loss = F.cross_entropy(z[s:s + _CHUNK] @ w.T + b, yt[s:s + _CHUNK], reduction="sum") / n
            loss.backward()
            total += loss.item()
        reg = 0.5 * weight_decay * w.pow(2).sum()
        reg.backward()
        return torch.tensor(total + reg.item())

    opt.step(closure)
    return LinearModel(mean, scale, w.detach(), b.detach())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, num_classes: int,
                 classes: tuple[str, ...], cfg: EvalConfig) -> tuple[np.ndarray, dict]:
    """Choose the weight decay on a stratified held-out part of train, refit on all of train, rank val classes."""
    held = stratified_val(train_y, classes, cfg.heldout_fraction, cfg.seed, salt="heldout")
    sweep = []
    with _torch_threads(1 if train_x.size * num_classes < _SMALL else None):
        if held.any():
            model = None
            for wd in sorted(cfg.weight_decays, reverse=True):  # strongest first: each fit warm-starts the next
                model = fit_linear(train_x[~held], train_y[~held], num_classes, wd, cfg.max_iter, init=model)
                logits = model.logits(train_x[held])
                top1 = float((logits.argmax(1).numpy() == train_y[held]).mean())
                loss = float(F.cross_entropy(logits, torch.from_numpy(train_y[held])))
                sweep.append({"weight_decay": wd, "heldout_top1": top1, "heldout_loss": loss})
            best = max(sweep, key=lambda r: (r["heldout_top1"], -r["heldout_loss"]))["weight_decay"]
        else:
            best = sorted(cfg.weight_decays)[len(cfg.weight_decays) // 2]
            log.warning("train is too small to hold out a part for the weight-decay sweep: using %g", best)
        model = fit_linear(train_x, train_y, num_classes, best, cfg.max_iter)
        ranked = torch.argsort(-model.logits(val_x), dim=1, stable=True)[:, :min(TOP, num_classes)].numpy()
    record = {"weight_decay": best, "sweep": sweep, "fit_rows": int((~held).sum()), "heldout_rows": int(held.sum()),
              "optimizer": f"L-BFGS full batch, at most {cfg.max_iter} iterations, standardised features"}
    return ranked, record


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a block on n torch threads (None: unchanged); small problems are faster on one, on a busy CPU much."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the stage

def evaluate_features(fs: FeatureSet, feature: str, rows: np.ndarray, split: Split, cfg: EvalConfig) -> dict:
    """k-NN and linear probe of one feature kind of one root on the shared split."""
    x = read_matrix(fs, feature)[rows]
    train_x, val_x = x[~split.is_val], x[split.is_val]
    train_y, val_y = split.y[~split.is_val], split.y[split.is_val]
    prov = fs.provenance
    run: dict = {"features": str(fs.root), "feature": feature, "dim": int(x.shape[1]), "provenance": prov}
    if prov.get("weights", {}).get("source") == "random":
        run["note"] = "random weights: these numbers test the pipeline, they say nothing about a model"
        log.warning("%s: features from random weights", fs.root)
    if cfg.knn:
        start = time.perf_counter()
        preds = knn_predict(train_x, train_y, val_x, len(split.classes), cfg.ks, cfg.temperature)
        by_k = []
        for k in cfg.ks:
            top1, top5 = accuracy(preds[k], val_y)
            by_k.append({"k": k, "k_used": min(k, len(train_x)), "top1": top1, "top5": top5})
            log.info("%s %s: %d-NN top-1 %.2f %%, top-5 %.2f %%", fs.root, feature, k, 100 * top1, 100 * top5)
        run["knn"] = {"temperature": cfg.temperature, "by_k": by_k, "seconds": time.perf_counter() - start}
    if cfg.linear:
        start = time.perf_counter()
        ranked, record = linear_probe(train_x, train_y, val_x, len(split.classes), split.classes, cfg)
        top1, top5 = accuracy(ranked, val_y)
        run["linear"] = {**record, "top1": top1, "top5": top5, "seconds": time.perf_counter() - start}
        log.info("%s %s: linear top-1 %.2f %%, top-5 %.2f %% (weight decay %g)", fs.root, feature,
                 100 * top1, 100 * top5, record["weight_decay"])
    return run


def run_evaluate(cfg: EvalConfig) -> dict:
    """Evaluate every root x feature kind on one labelled split; write `results.json` (or `compare.json`)."""
    sets = [open_features(root) for root in cfg.features]
    split, report = resolve_split(cfg, sets)
    protocol = {**cfg.protocol(), "split": split.mode, "data": split.digest()}
    results = {
        "protocol": protocol,
        # equal protocol fingerprints: same labels, split and settings; runs are then comparable when their
        # provenance fingerprints are equal (same features) or differ only in what is being compared
        "protocol_fingerprint": hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16],
        "labels": {"source": cfg.labels, "classes": list(split.classes), **report},
        "runs": [evaluate_features(fs, feature, rows, split, cfg)
                 for fs, rows in zip(sets, split.rows) for feature in cfg.feature],
    }
    out = Path(cfg.out or OutputRoot(cfg.features[0]).eval_dir)
    path = out / ("results.json" if len(cfg.features) == 1 else "compare.json")
    write_json_atomic(results, path)
    results["path"] = str(path)
    return results


def format_results(results: dict) -> str:
    """The runs side by side: one column per feature set, one row per method (top-1 / top-5, %)."""
    runs = results["runs"]
    lab = results["labels"]
    first = runs[0]["provenance"]
    rows: list[tuple[str, list[str]]] = [
        ("features", [f"{r['features']} [{r['feature']}]" for r in runs]),
        ("model", [str(r["provenance"].get("model")) for r in runs]),
        ("weights", [_weights(r["provenance"]) for r in runs]),
        ("input", [f"{r['provenance'].get('input_size')} {r['provenance'].get('resize_mode')}" for r in runs]),
        ("dtype", [str(r["provenance"].get("dtype")) for r in runs]),
        ("fingerprint", [str(r["provenance"].get("fingerprint")) for r in runs]),
    ]
    if len({r["provenance"].get("fingerprint") for r in runs}) > 1:
        rows.append(("differs from 1st", [", ".join(differing_fields(first, r["provenance"])) or "-" for r in runs]))
    for i, entry in enumerate(runs[0].get("knn", {}).get("by_k", [])):
        name = f"{entry['k']}-NN" + (f" (k={entry['k_used']})" if entry["k_used"] != entry["k"] else "")
        rows.append((name, [_pair(r["knn"]["by_k"][i]) for r in runs]))
    if "linear" in runs[0]:
        rows.append(("linear", [_pair(r["linear"]) for r in runs]))
        rows.append(("  weight decay", [f"{r['linear']['weight_decay']:g}" for r in runs]))
    width = max(len(name) for name, _ in rows)
    cols = [max(len(cells[j]) for _, cells in rows) for j in range(len(runs))]
    lines = [f"{lab['used']} images, {lab['classes']} classes ({lab['source']}): {lab['train']} train, "
             f"{lab['val']} val ({results['protocol']['split']} split, data {results['protocol']['data']}); "
             f"majority class {100 * lab['majority_top1']:.1f} %; cells: top-1 / top-5 %"]
    lines += [(f"{name:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, cols))).rstrip()
              for name, cells in rows]
    lines += sorted({f"note: {r['note']}" for r in runs if "note" in r})
    return "\n".join(lines)


def _pair(entry: dict) -> str:
    return f"{100 * entry['top1']:.1f} / {100 * entry['top5']:.1f}"


def _weights(prov: dict) -> str:
    w = prov.get("weights", {})
    return "random" if w.get("source") == "random" else f"sha256 {str(w.get('sha256'))[:12]}"
