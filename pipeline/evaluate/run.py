"""The evaluate stage: k-NN and linear probe of every feature set on one labelled split, into results.json.

EvalConfig (the protocol's settings), the run over roots x feature kinds, the record stamped with every run's
provenance and a protocol fingerprint, and the side-by-side table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.evaluate.knn import KS, TEMPERATURE, accuracy, knn_predict
from pipeline.evaluate.labels import Split, resolve_split
from pipeline.evaluate.linear import MAX_ITER, WEIGHT_DECAYS, linear_probe
from pipeline.io.external import is_npy
from pipeline.io.features import FEATURE_CHOICES, FeatureSet, check_feature, open_features, read_matrix
from pipeline.io.files import write_json_atomic
from pipeline.layout import OutputRoot
from pipeline.provenance import differing_fields, is_random, same

__all__ = ["KS", "WEIGHT_DECAYS", "EvalConfig", "evaluate_features", "format_results", "protocol_fingerprint",
           "run_evaluate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: several feature roots x feature kinds, all with the same labels and split."""

    features: tuple[str, ...]  # extract output roots, or .npy / Parquet made elsewhere
    keys: str | None = None  # the keys of the .npy among them, one a line (default: row numbers)
    labels: str = "folder"  # "folder" (first path component of a folder extract's key) or a .csv/.parquet file
    feature: tuple[str, ...] = ("cls",)
    ks: tuple[int, ...] = KS
    temperature: float = TEMPERATURE
    val_fraction: float = 0.2  # seeded stratified split, when the labels file has no `split` column
    seed: int = 0
    knn: bool = True
    linear: bool = True
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS
    heldout_fraction: float = 0.2  # of train, to choose the weight decay
    max_iter: int = MAX_ITER  # L-BFGS iterations per fit
    out: str | None = None  # folder; default FEATURES[0]/eval

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("give at least one feature root")
        if not self.feature:
            raise ConfigError(f"feature must be among {FEATURE_CHOICES}, got {list(self.feature)}")
        for feature in self.feature:
            check_feature(feature, *self.features)
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


def protocol_fingerprint(protocol: dict) -> str:
    """16 hex digits of SHA-256 over the protocol (settings + split mode + data digest)."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_features(fs: FeatureSet, feature: str, rows: np.ndarray, split: Split, cfg: EvalConfig) -> dict:
    """k-NN and linear probe of one feature kind of one root on the shared split."""
    x = read_matrix(fs, feature)[rows]
    train_x, val_x = x[~split.is_val], x[split.is_val]
    train_y, val_y = split.y[~split.is_val], split.y[split.is_val]
    prov = fs.provenance
    run: dict = {"features": str(fs.root), "feature": feature, "dim": int(x.shape[1]), "provenance": prov}
    if is_random(prov):
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
        ranked, record = linear_probe(train_x, train_y, val_x, split.classes, weight_decays=cfg.weight_decays,
                                      heldout_fraction=cfg.heldout_fraction, seed=cfg.seed, max_iter=cfg.max_iter)
        top1, top5 = accuracy(ranked, val_y)
        run["linear"] = {**record, "top1": top1, "top5": top5, "seconds": time.perf_counter() - start}
        log.info("%s %s: linear top-1 %.2f %%, top-5 %.2f %% (weight decay %g)", fs.root, feature,
                 100 * top1, 100 * top5, record["weight_decay"])
    return run


def run_evaluate(cfg: EvalConfig) -> dict:
    """Evaluate every root x feature kind on one labelled split; write `results.json` (or `compare.json`)."""
    sets = [open_features(root, cfg.keys if is_npy(root) else None) for root in cfg.features]
    split, report = resolve_split(sets, cfg.labels, cfg.val_fraction, cfg.seed)
    protocol = {**cfg.protocol(), "split": split.mode, "data": split.digest()}
    results = {
        "protocol": protocol,
        # equal protocol fingerprints: same labels, split and settings; runs are then comparable when their
        # provenance fingerprints are equal (same features) or differ only in what is being compared
        "protocol_fingerprint": protocol_fingerprint(protocol),
        # the class names last, so no count in the report can take their place
        "labels": {"source": cfg.labels, **report, "classes": list(split.classes)},
        "runs": [evaluate_features(fs, feature, rows, split, cfg)
                 for fs, rows in zip(sets, split.rows) for feature in cfg.feature],
    }
    out = Path(cfg.out) if cfg.out else OutputRoot.for_features(cfg.features[0]).eval_dir
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
    if not all(same(first, r["provenance"]) for r in runs):
        rows.append(("differs from 1st", [", ".join(differing_fields(first, r["provenance"])) or "-" for r in runs]))
    for i, entry in enumerate(runs[0].get("knn", {}).get("by_k", [])):
        name = f"{entry['k']}-NN" + (f" (k={entry['k_used']})" if entry["k_used"] != entry["k"] else "")
        rows.append((name, [_pair(r["knn"]["by_k"][i]) for r in runs]))
    if "linear" in runs[0]:
        rows.append(("linear", [_pair(r["linear"]) for r in runs]))
        rows.append(("  weight decay", [f"{r['linear']['weight_decay']:g}" for r in runs]))
    width = max(len(name) for name, _ in rows)
    cols = [max(len(cells[j]) for _, cells in rows) for j in range(len(runs))]
    lines = [f"{lab['used']} images, {lab['num_classes']} classes ({lab['source']}): {lab['train']} train, "
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
