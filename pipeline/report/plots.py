"""The report's PNG plots: nearest-neighbour similarities with the threshold, component sizes, throughput.

Matplotlib's Agg canvas without pyplot state: safe in any process.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state: safe in any process

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_similarities(groups: pa.Table, threshold: float, note: str, path: Path,
                      knn_nearest: np.ndarray | None = None) -> None:
    """Nearest-neighbour similarities (linked images by reason; all images from the k-NN graph when there is
    one) with the threshold line: where copies and distinct images sit for this model."""
    sims = np.asarray(groups.column("nearest_similarity").to_numpy(zero_copy_only=False), np.float64)
    reasons = np.asarray(groups.column("reason").to_pylist(), dtype=object)
    ok = ~np.isnan(sims)
    lo = min([0.0, float(np.nanmin(sims)) if ok.any() else 0.0]
             + ([float(knn_nearest.min())] if knn_nearest is not None and len(knn_nearest) else []))
    bins = np.linspace(lo, 1.0, 51)
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot()
    if knn_nearest is not None and len(knn_nearest):
        ax.hist(np.clip(knn_nearest, lo, 1.0), bins=bins, histtype="step", color="#555", lw=1.5,
                label=f"all images: nearest neighbour (k-NN graph, n={len(knn_nearest)})")
    labels = [r for r in ("exact", "phash", "embedding", "keep", "contaminated") if (ok & (reasons == r)).any()]
    if labels:
        ax.hist([np.clip(sims[ok & (reasons == r)], lo, 1.0) for r in labels], bins=bins, stacked=True,
                label=[f"grouped, {'kept' if r == 'keep' else r} (n={int((ok & (reasons == r)).sum())})"
                       for r in labels])
    ax.axvline(threshold, color="#c62828", ls="--", lw=1.5, label=f"threshold {threshold:g}{note}")
    ax.set_xlabel("cosine similarity to the nearest (linked) image")
    ax.set_ylabel("images")
    if len(sims) > 200:
        ax.set_yscale("symlog", linthresh=1)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2)  # below the axes: never over the bars
    fig.savefig(path)


def plot_component_sizes(sizes: dict[int, int], path: Path) -> None:
    fig = _figure(5.6, 3.4)
    ax = fig.add_subplot()
    xs = sorted(sizes)
    if len(xs) <= 40:  # one bar per size, labelled
        ax.bar(range(len(xs)), [sizes[x] for x in xs], color="#1565c0", tick_label=[str(x) for x in xs])
    else:
        ax.bar(xs, [sizes[x] for x in xs], color="#1565c0")
        ax.set_xscale("log")
    if max(sizes.values(), default=0) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("component size (images)")
    ax.set_ylabel("components")
    fig.savefig(path)


def plot_throughput(times: list[datetime], rows: list[int], path: Path, start: datetime | None = None) -> None:
    """Cumulative rows and rows/s over time, from the done markers' finish times, counted from the run's
    `start` when it is known (else from the first shard's end, whose own rows are then left out of the rate)."""
    order = np.argsort(np.array([t.timestamp() for t in times]))
    t = np.array([times[i].timestamp() for i in order])
    r = np.cumsum([rows[i] for i in order])
    origin = start.timestamp() if start is not None else t[0]
    elapsed = t - origin
    fig = _figure(5.6, 3.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.step(np.concatenate([[0.0], elapsed]) if start is not None else elapsed,
             np.concatenate([[0], r]) if start is not None else r, where="post", color="#1565c0")
    ax1.set_xlabel("seconds")
    ax1.set_title(f"from {(start or times[order[0]]).isoformat(sep=' ', timespec='seconds')}", fontsize=8)
    ax1.set_ylabel("images written (cumulative)")
    counted = slice(0, None) if start is not None else slice(1, None)
    if len(elapsed[counted]) and elapsed[-1] > 0:
        edges = np.linspace(0, elapsed[-1], min(30, max(1, len(elapsed[counted]))) + 1)
        counts, _ = np.histogram(elapsed[counted], bins=edges, weights=[rows[i] for i in order[counted]])
        ax2.bar(edges[:-1], counts / np.diff(edges), width=np.diff(edges), align="edge", color="#2e7d32")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("images/s (by shard finish time)")
    fig.savefig(path)
