"""The evaluate stage: k-NN and linear probe of every feature set on one labelled split, into results.json.

The run over roots x feature kinds (settings: EvalConfig in evaluate/config.py), the record stamped with every run's
provenance and a protocol fingerprint, and the side-by-side table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.knn import KS, accuracy, knn_predict
from pipeline.evaluate.labels import Split, resolve_split
from pipeline.evaluate.linear import WEIGHT_DECAYS, linear_probe
from pipeline.evaluate.results import EvalResult
from pipeline.io.files import write_json_atomic
from pipeline.layout import OutputRoot
from pipeline.provenance import differing_fields, is_random, same
from pipeline.roots.external import is_npy
from pipeline.roots.features import FeatureSet, open_features, read_matrix

__all__ = ["KS", "WEIGHT_DECAYS", "EvalConfig", "evaluate_features", "format_results", "protocol_fingerprint",
           "run_evaluate"]

log = logging.getLogger(__name__)


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


def run_evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate every root x feature kind on one labelled split; write `results.json` (or `compare.json`);
    returns its runs, path and the side-by-side table, the record as written in `record`."""
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
    return EvalResult(path, results["runs"], format_results(results), results["protocol_fingerprint"], results)


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
