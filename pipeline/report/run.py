"""A static HTML report of an output root: dedup groups and threshold histogram, search, curate, extract health.

One self-contained folder (`OUT/report/`): HTML pages with inline CSS and no script, PNG plots, and small JPEG
thumbnails read from the original images (only the ones shown). Every key, path and message from the data is
escaped: keys come from untrusted file names and tar members.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError, MissingInputError
from pipeline.extract.config import DEFAULT_MAX_PIXELS
from pipeline.io.decode import DATA_ERRORS, SampleError, decode_image
from pipeline.layout import OutputRoot
from pipeline.io.files import write_json_atomic

log = logging.getLogger(__name__)

THUMBS = "thumbs"
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:10px 20px}header a{color:#b3e5fc;margin-right:14px}
main{padding:0 20px 40px}h2{border-bottom:2px solid #ccc;padding-top:14px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#eee}td.num{text-align:right}
.tiles{display:flex;flex-wrap:wrap;gap:6px}.group,.query{background:#fff;border:1px solid #ddd;margin:10px 0;
padding:6px 8px}.ghead{font-weight:600;margin-bottom:4px}
figure{margin:0;width:__W__px;border:3px solid transparent;font-size:11px}figure.keeper{border-color:#2e7d32}
figure.query{border-color:#1565c0}
figure img,.missing{display:block;max-width:__T__px;max-height:__T__px;margin:auto}
.missing{width:__T__px;height:__H__px;background:#eee;color:#900;display:flex;align-items:center;
justify-content:center;text-align:center;overflow:hidden}
figcaption{word-break:break-all;max-height:5.6em;overflow:hidden}
.badge{background:#2e7d32;color:#fff;border-radius:3px;padding:0 4px;font-weight:700}
.badge.drop{background:#b71c1c}.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px}
.pager a,.pager b{margin-right:8px}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure.plot{width:auto;flex:1 1 420px;max-width:560px;font-size:12px}figure.plot figcaption{word-break:normal;
max-height:none}figure.plot img{max-width:100%;max-height:none;
border:1px solid #ddd;background:#fff}.facts span{display:inline-block;margin:0 16px 4px 0}
"""


@dataclass(frozen=True)
class ReportConfig:
    out: str  # an extract output root; its dedup/ and curate/ outputs are reported when present
    report: str | None = None  # default: OUT/report
    search: str | None = None  # a search result table (.parquet or .csv) over OUT's index
    search_queries: str | None = None  # where the search's query images are: an image, a folder or an OUT
    groups_per_page: int = 50
    max_groups: int = 2500  # the largest groups are shown; the rest are counted
    max_members: int = 24  # thumbnails shown per group
    search_max_queries: int = 50
    curate_samples: int = 12  # queries or clusters sampled per seed set
    curate_per_sample: int = 8
    max_failures: int = 200  # failing keys listed
    thumb_size: int = 128
    seed: int = 0


# --------------------------------------------------------------------------------------------- image sources
@dataclass(frozen=True)
class ImageSource:
    """Where images come from: an image folder (key = relative path), tar shards of an extract root, or one
    file (a single-image search query)."""

    kind: str  # "folder" | "shards" | "file"
    path: Path  # folder, extract root (shards) or file
    image_key: str | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.path}"


def open_source(path: str | os.PathLike) -> ImageSource | None:
    """The image source of an extract root (from its config.json), a folder or a file; None when unknown."""
    path = Path(path)
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text()).get("config", {})
        if config.get("shards"):
            return ImageSource("shards", path, config.get("image_key"))
        if config.get("images"):
            return ImageSource("folder", Path(config["images"]).expanduser().absolute())
        return None
    if path.is_dir():
        return ImageSource("folder", path.absolute())
    if path.is_file():
        return ImageSource("file", path.absolute())
    return None


Item = tuple[str, str, int]  # (key, shard, index)


def read_images(source: ImageSource, items: Iterable[Item]) -> dict[Item, bytes | str]:
    """Encoded bytes of each item, or why they could not be read; tar shards are streamed only up to the last
    item wanted from them."""
    items = list(dict.fromkeys(items))
    if source.kind == "file":
        try:
            data = source.path.read_bytes()
        except OSError as exc:
            return {it: f"{type(exc).__name__}: {exc}" for it in items}
        return {it: data for it in items}
    if source.kind == "folder":
        return {it: _read_folder_file(source.path, it[0]) for it in items}
    return _read_from_shards(source, items)


def _read_folder_file(root: Path, key: str) -> bytes | str:
    path = Path(root, key)
    try:
        path.resolve().relative_to(root.resolve())  # a key is data: never read outside the folder
    except ValueError:
        return "key points outside the image folder"
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _read_from_shards(source: ImageSource, items: list[Item]) -> dict[Item, bytes | str]:
    from pipeline.io.samples import ShardEnd, iter_tar, pick_image

    found: dict[Item, bytes | str] = {it: "not found in its shard" for it in items}
    by_shard: dict[str, dict[int, Item]] = {}
    for it in items:
        by_shard.setdefault(it[1], {})[int(it[2])] = it
    try:
        shards = OutputRoot(source.path).source_shards()
    except (OSError, ValueError) as exc:
        return {it: f"shards of {source.path} cannot be listed: {exc}" for it in items}
    for shard_id, want in sorted(by_shard.items()):
        if shard_id not in shards:
            found.update({it: f"shard {shard_id} is not among the inputs" for it in want.values()})
            continue
        last = max(want)
        try:
            with closing(iter_tar(shards[shard_id], ShardEnd(shard_id))) as samples:  # closes the stream
                for index, sample in enumerate(samples):
                    it = want.get(index)
                    if it is not None:
                        if sample.get("__key__") != it[0]:
                            found[it] = f"{shard_id}#{index} holds another key"
                        else:
                            try:
                                found[it] = pick_image(sample, source.image_key)
                            except SampleError as err:
                                found[it] = f"{err.reason}: {err.detail}"
                    if index >= last:
                        break
        except (OSError, ValueError) as exc:
            log.warning("report: shard %s could not be read: %s", shard_id, exc)
            error = f"{type(exc).__name__}: {exc}"
            found.update({it: error for it in want.values() if isinstance(found[it], str)})
    return found


def key_locations(root: str | os.PathLike) -> dict[str, Item]:
    """key → (key, shard, index) of an extract root's feature rows (to show images known only by key)."""
    from pipeline.io.features import open_features, read_meta

    meta = read_meta(open_features(root), ("key", "shard", "index"))
    return {k: (k, s, int(i)) for k, s, i in zip(*(meta.column(c).to_pylist() for c in ("key", "shard", "index")))}


# ------------------------------------------------------------------------------------------------ thumbnails
@dataclass
class Thumb:
    """A thumbnail a page wants; `src` (relative to the page) is set once written, `error` otherwise."""

    key: str
    name: str
    src: str | None = None
    error: str | None = None

    def html(self) -> str:
        if self.src:
            return f'<img src="{esc(self.src)}" alt="{esc(self.key)}" loading="lazy">'
        return f'<div class="missing" title="{esc(self.error or "")}">image unavailable</div>'


class Thumbnails:
    """Collects what the pages show, then reads only those images from their sources and writes small JPEGs."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder, self.size = folder, size
        self.wanted: dict[str, tuple[ImageSource, Item, Thumb]] = {}
        self.missing: Counter = Counter()
        self.written = 0

    def want(self, source: ImageSource | None, key: str, shard: str = "", index: int = -1) -> Thumb:
        item = (key, shard or "", int(index))
        name = hashlib.sha1("\0".join([source.id if source else "", *map(str, item)]).encode()).hexdigest()[:20]
        if name not in self.wanted:
            thumb = Thumb(key, f"{name}.jpg", error=None if source else "the image source is unknown")
            self.wanted[name] = (source, item, thumb)
        return self.wanted[name][2]

    def fetch(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        by_source: dict[str, list[tuple[ImageSource, Item, Thumb]]] = {}
        for source, item, thumb in self.wanted.values():
            if source is not None:
                by_source.setdefault(source.id, []).append((source, item, thumb))
        for entries in by_source.values():
            got = read_images(entries[0][0], [item for _, item, _ in entries])
            for _, item, thumb in entries:
                data = got.get(item, "not read")
                if isinstance(data, str):
                    thumb.error = data
                else:
                    thumb.error = self._write(data, self.folder / thumb.name)
                    if thumb.error is None:
                        thumb.src = f"{THUMBS}/{thumb.name}"
                        self.written += 1
        self.missing = Counter(t.error.split(":")[0] for _, _, t in self.wanted.values() if t.src is None)
        if self.missing:
            log.warning("report: %d of %d images could not be shown (%s)", sum(self.missing.values()),
                        len(self.wanted), dict(self.missing))

    def _write(self, data: bytes, path: Path) -> str | None:
        size = self.size

        def target(w: int, h: int) -> tuple[int, int]:
            scale = min(1.0, size / max(w, h, 1))
            return math.ceil(w * scale), math.ceil(h * scale)

        try:
            img = decode_image(data, DEFAULT_MAX_PIXELS, target=target).image
            img.thumbnail((size, size))
            img.save(path, format="JPEG", quality=85)
        except SampleError as err:
            return f"{err.reason}: {err.detail}"
        except DATA_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


# ------------------------------------------------------------------------------------------------------ html
def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Page:
    """HTML parts: strings, and thumbnails rendered once they are fetched."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str | Thumb] = []

    def add(self, *parts: str | Thumb) -> None:
        self.parts.extend(parts)

    def render(self, nav: str, thumb_size: int) -> str:
        css = (CSS.replace("__W__", str(thumb_size + 12)).replace("__T__", str(thumb_size))
               .replace("__H__", str(thumb_size * 3 // 4)))
        body = "".join(p if isinstance(p, str) else p.html() for p in self.parts)
        return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(self.title)}</title>'
                f'<meta name="viewport" content="width=device-width"><style>{css}</style></head>\n'
                f'<body><header><b>dinocurate report</b> &nbsp; {nav}</header><main>\n{body}\n</main></body></html>\n')


def tile(thumb: Thumb, caption: str, kind: str = "", badge: str = "") -> list[str | Thumb]:
    """A thumbnail with its caption; `kind` (keeper, query) frames it."""
    cls = f"tile {kind}".strip()
    return [f'<figure class="{cls}" data-key="{esc(thumb.key)}" title="{esc(thumb.key)}">', thumb,
            f'<figcaption>{badge}{caption}</figcaption></figure>']


def table_html(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(v)}</td>' if isinstance(v, (int, float))
                                    else f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def facts_html(facts: Iterable[tuple[str, object]]) -> str:
    """Label: value pairs on one wrapped line."""
    return '<p class="facts">' + "".join(
        f"<span><b>{esc(k)}</b> {_fmt(v) if isinstance(v, (int, float)) else esc(v)}</span>" for k, v in facts) + "</p>"


def _fmt(v: float | int) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return f"{v:,}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sim(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


# ----------------------------------------------------------------------------------------------------- plots
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
    fig = _figure(5.6, 3.4)
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
    ax.legend(fontsize=7, loc="upper left")
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


def plot_throughput(times: list[datetime], rows: list[int], path: Path) -> None:
    """Cumulative rows and rows/s over time, from the done markers' finish times (1 s resolution)."""
    order = np.argsort(np.array([t.timestamp() for t in times]))
    t = np.array([times[i].timestamp() for i in order])
    r = np.cumsum([rows[i] for i in order])
    elapsed = t - t[0]
    fig = _figure(5.6, 3.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.step(elapsed, r, where="post", color="#1565c0")
    ax1.set_xlabel("seconds")
    ax1.set_title(f"from {times[order[0]].isoformat(sep=' ')}", fontsize=8)
    ax1.set_ylabel("images written (cumulative)")
    if len(t) > 1 and t[-1] > t[0]:  # the first shard's rows are left out: when it started is not known
        edges = np.linspace(0, elapsed[-1], min(30, len(t) - 1) + 1)
        counts, _ = np.histogram(elapsed[1:], bins=edges, weights=[rows[i] for i in order[1:]])
        ax2.bar(edges[:-1], counts / np.diff(edges), width=np.diff(edges), align="edge", color="#2e7d32")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("images/s (by shard finish time)")
    fig.savefig(path)


# -------------------------------------------------------------------------------------------------- sections
@dataclass
class Report:
    cfg: ReportConfig
    folder: Path
    source: ImageSource | None
    thumbs: Thumbnails
    index: Page = field(default_factory=lambda: Page("dinocurate report"))
    pages: dict[str, Page] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def dedup_section(rep: Report, dedup: Path) -> None:
    """Counts, the similarity histogram with the threshold, component sizes, then the groups (paged)."""
    groups = pq.read_table(dedup / "groups.parquet")
    summary = json.loads((dedup / "summary.json").read_text()) if (dedup / "summary.json").exists() else {}
    dcfg = summary.get("config", {})
    threshold = float(dcfg.get("threshold", 0.6))
    stage = summary.get("stages", {}).get("embedding", {})
    note = f" (not applied: embedding stage off, {stage['skipped']})" if stage.get("skipped") else ""
    page = rep.index
    page.add('<section id="dedup"><h2>Dedup</h2>')
    if "warning" in summary:
        page.add(f'<p class="warn">{esc(summary["warning"])}</p>')
    facts = [("images", summary.get("images", groups.num_rows)), ("kept", summary.get("kept", "")),
             ("duplicates removed", summary.get("duplicates_removed", "")),
             ("contaminated removed", summary.get("contaminated_removed", "")),
             ("groups", summary.get("groups", "")), ("threshold", f"{threshold:g}{note}"),
             ("feature", summary.get("feature", dcfg.get("feature", "")))]
    facts += [(f"{k} edges", v.get("edges", 0)) for k, v in summary.get("stages", {}).items()]
    page.add(facts_html(facts))
    knn = _knn_nearest(dedup / "knn")
    plot_similarities(groups, threshold, note, rep.folder / "nearest_similarity.png", knn)
    sizes = ({int(k): int(v) for k, v in summary["component_sizes"].items()} if "component_sizes" in summary
             else dict(Counter(Counter(groups.column("component").to_pylist()).values())))
    plot_component_sizes(sizes, rep.folder / "component_sizes.png")
    page.add('<div class="plots"><figure class="plot"><img src="nearest_similarity.png" alt="nearest-neighbour '
             'similarity histogram"><figcaption>Nearest-neighbour similarity: put <code>--threshold</code> '
             'between copies and distinct images. Grouped images show their similarity to the nearest image they '
             'are linked to (exact and perceptual copies show where true copies lie); '
             + ('the outline is every image\'s nearest neighbour from the k-NN graph.' if knn is not None else
                'ungrouped images have no <code>nearest_similarity</code> (no k-NN graph in dedup/knn).')
             + '</figcaption></figure><figure class="plot"><img src="component_sizes.png" alt="component sizes">'
             '<figcaption>Component sizes (1 = unique images).</figcaption></figure></div>')
    shown, total = _dedup_groups(rep, groups)
    rep.info["dedup"] = {"groups": total, "groups_shown": shown}
    page.add("</section>")


def _knn_nearest(graph: Path) -> np.ndarray | None:
    parts = sorted(graph.glob("part-*.parquet"))
    if not parts:
        return None
    out = []
    for path in parts:
        col = pq.read_table(path, columns=["similarities"]).column("similarities").combine_chunks()
        out.append(col.values.to_numpy().reshape(len(col), -1)[:, 0])
    sims = np.concatenate(out)
    return sims[np.isfinite(sims)]


def _dedup_groups(rep: Report, groups: pa.Table) -> tuple[int, int]:
    """Groups as rows of thumbnails, largest first, `groups_per_page` per page (page 1 in index.html)."""
    cfg = rep.cfg
    grouped = groups.filter(pc.greater(groups.column("component_size"), 1))
    comp = grouped.column("component").to_numpy()
    ids, first = np.unique(comp, return_index=True)
    sizes = grouped.column("component_size").to_numpy()[first]
    order = ids[np.lexsort((ids, -sizes))].tolist()  # largest first, then by component id
    total = len(order)
    order = order[:cfg.max_groups]
    shown = grouped.filter(pc.is_in(grouped.column("component"), pa.array(order, pa.int64()))).sort_by(
        [("component", "ascending"), ("keep", "descending"), ("nearest_similarity", "descending"),
         ("key", "ascending")])
    comp = shown.column("component").to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(comp)) + 1] if len(comp) else np.zeros(0, np.int64)
    rank = np.arange(len(comp)) - np.repeat(starts, np.diff(np.r_[starts, len(comp)]))
    members: dict[int, list[dict]] = {}
    for r in shown.filter(pa.array(rank < cfg.max_members)).to_pylist():  # a chained giant stays cheap
        members.setdefault(r["component"], []).append(r)
    n_pages = max(1, math.ceil(len(order) / cfg.groups_per_page))
    for p in range(n_pages):
        page = rep.index if p == 0 else rep.pages.setdefault(f"dedup-{p + 1}.html", Page(f"dedup groups, page {p + 1}"))
        page.add(f'<h3 id="groups">Duplicate groups ({total}, largest first)</h3>' if p == 0 else
                 f'<h2 id="groups">Duplicate groups, page {p + 1} of {n_pages}</h2>')
        pager = _pager(p + 1, n_pages)
        page.add(pager)
        start = p * cfg.groups_per_page
        for n, c in enumerate(order[start:start + cfg.groups_per_page], start + 1):
            _group_html(rep, page, n, c, members[c])
        page.add(pager)
    if total > len(order):
        rep.pages.get(f"dedup-{n_pages}.html", rep.index).add(
            f"<p>{total - len(order)} smaller groups are not shown (--max-groups {cfg.max_groups}); "
            f"all are in dedup/groups.parquet.</p>")
    if not order:
        rep.index.add("<p>No duplicate groups.</p>")
    return len(order), total


def _pager(current: int, n_pages: int) -> str:
    if n_pages <= 1:
        return ""
    name = lambda p: "index.html#groups" if p == 1 else f"dedup-{p}.html"  # noqa: E731
    links = []
    for p in range(1, n_pages + 1):
        if p in (1, n_pages) or abs(p - current) <= 3:
            links.append(f"<b>{p}</b>" if p == current else f'<a href="{name(p)}">{p}</a>')
        elif links[-1] != "…":
            links.append("…")
    return f'<p class="pager">pages: {" ".join(links)}</p>'


def _group_html(rep: Report, page: Page, n: int, component: int, rows: list[dict]) -> None:
    """One group: keeper first, then by similarity; `rows` holds at most `max_members` of its members."""
    size = int(rows[0]["component_size"])
    contaminated = any(r["reason"] == "contaminated" for r in rows)
    cls = "group contaminated" if contaminated else "group"
    page.add(f'<div class="{cls}" data-component="{int(component)}" data-size="{size}">'
             f'<div class="ghead">#{n} · {size} images · component {int(component)}'
             f'{" · contaminated: all dropped" if contaminated else ""}</div><div class="tiles">')
    for r in rows:
        thumb = rep.thumbs.want(rep.source, r["key"], r["shard"], r["index"])
        badge = '<span class="badge">kept</span> ' if r["keep"] else '<span class="badge drop">dup</span> '
        caption = (f'{esc(r["key"])}<br>{esc(r["reason"])} · {_sim(r["nearest_similarity"])}'
                   + (f' to {esc(r["nearest_key"])}' if r["nearest_key"] and not r["keep"] else ""))
        page.add(*tile(thumb, caption, kind="keeper" if r["keep"] else "", badge=badge))
    page.add("</div>")
    if size > len(rows):
        page.add(f"<p>… and {size - len(rows)} more (component {int(component)} in dedup/groups.parquet)</p>")
    page.add("</div>")


def read_table(path: str | os.PathLike) -> pa.Table:
    """A search result table (.parquet, or .csv with keys kept as text: `00012` must not become 12)."""
    if str(path).endswith(".csv"):
        import pyarrow.csv as pacsv

        text = {c: pa.string() for c in ("query", "key", "shard")}
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text))
    return pq.read_table(path)


def search_html(page: Page, thumbs: Thumbnails, table: pa.Table, source: ImageSource | None,
                query_source: str | None, max_queries: int) -> int:
    """Each query (its image when `query_source` locates it) and its neighbours with similarities."""
    rows = table.to_pylist()
    by_query: dict[str, list[dict]] = {}
    for r in rows:
        by_query.setdefault(str(r["query"]), []).append(r)
    q_source, q_items = _query_items(query_source, list(by_query)[:max_queries])
    for q, hits in list(by_query.items())[:max_queries]:
        page.add(f'<div class="query" data-query="{esc(q)}"><div class="ghead">query: {esc(q)}</div>'
                 '<div class="tiles">')
        if q in q_items:
            page.add(*tile(thumbs.want(q_source, *q_items[q]), "query", kind="query"))
        for r in sorted(hits, key=lambda r: r["rank"]):
            thumb = thumbs.want(source, str(r["key"]), str(r.get("shard") or ""), int(r.get("index") or 0))
            page.add(*tile(thumb, f'#{int(r["rank"])} · {_sim(r["similarity"])}<br>{esc(r["key"])}'))
        page.add("</div></div>")
    if len(by_query) > max_queries:
        page.add(f"<p>{len(by_query) - max_queries} more queries are not shown.</p>")
    return len(by_query)


def _query_items(query_source: str | None, keys: list[str]) -> tuple[ImageSource | None, dict[str, Item]]:
    """Where the query images are: one file (any key), a folder (key = relative path), or an extract root."""
    if not query_source:
        return None, {}
    path = Path(query_source)
    if (path / "features").is_dir():
        try:
            where = key_locations(path)
        except (OSError, ValueError) as exc:
            log.warning("report: cannot read the keys of %s: %s", path, exc)
            return None, {}
        return open_source(path), {k: where[k] for k in keys if k in where}
    source = open_source(path)
    return (source, {k: (k, "", -1) for k in keys}) if source else (None, {})


def write_search_page(table: pa.Table, path: str | os.PathLike, root: str | os.PathLike | None,
                      query: str | None = None, query_source: str | None = None, thumb_size: int = 160) -> Path:
    """The neighbours page of one query (`query`, or every query of `table` when None): HTML at `path`,
    thumbnails in `thumbs/` beside it. `root` is the extract output the index was built from (its images
    are the neighbours); `query_source` the image, folder or extract output the queries came from."""
    path = Path(path)
    if query is not None:
        table = table.filter(pc.equal(table.column("query"), query))
        if table.num_rows == 0:
            raise InputError(f"query {query!r} is not in the search results")
    thumbs = Thumbnails(path.parent / THUMBS, thumb_size)
    page = Page(f"neighbours of {query}" if query else "search results")
    page.add('<section id="search"><h2>Search</h2>')
    search_html(page, thumbs, table, open_source(root) if root else None, query_source, max_queries=10**6)
    page.add("</section>")
    thumbs.fetch()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.render("", thumb_size), encoding="utf-8")
    return path


def index_features_root(index_dir: str | os.PathLike) -> str | None:
    """The extract output an index was built from (recorded in its index.json)."""
    index_dir = Path(index_dir)
    record = index_dir / "index.json" if (index_dir / "index.json").exists() else index_dir / "index" / "index.json"
    return json.loads(record.read_text()).get("features") if record.exists() else None


def curate_section(rep: Report, curate: Path) -> None:
    """Per seed set: what it selected, for a seeded sample of its queries (or clusters)."""
    cfg = rep.cfg
    table = pq.read_table(curate / "selected.parquet")
    summary = json.loads((curate / "summary.json").read_text()) if (curate / "summary.json").exists() else {}
    page = rep.index
    page.add('<section id="curate"><h2>Curate</h2>')
    srcs = summary.get("sources", {})
    if srcs:
        page.add(table_html(["seed set", "mode", "queries", "selected", "unique", "why"],
                            [[n, s.get("mode", ""), s.get("queries", ""), s.get("selected", ""),
                              s.get("unique", ""), s.get("why", "")] for n, s in srcs.items()]))
    page.add(f"<p>{table.num_rows} pool images selected of {esc(summary.get('pool', '?'))}.</p>")
    roots = {str(n): str(r) for n, r in summary.get("config", {}).get("queries", [])}
    rng = np.random.default_rng(cfg.seed)
    rows = table.to_pylist()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        label = ("query", r["query"]) if r["mode"] == "sample" else ("cluster", r["cluster"])
        groups.setdefault((r["source"], *label), []).append(r)
    shown = 0
    for source in sorted({g[0] for g in groups}):
        names = sorted((g for g in groups if g[0] == source), key=str)
        pick = sorted(rng.choice(len(names), min(cfg.curate_samples, len(names)), replace=False).tolist())
        kind = "queries" if names[0][1] == "query" else "clusters"
        page.add(f"<h3>{esc(source)}: {len(pick)} of {len(names)} {kind}, sampled (--seed {cfg.seed})</h3>")
        q_source, q_items = _query_items(roots.get(source), [str(names[i][2]) for i in pick
                                                             if names[i][1] == "query"])
        for i in pick:
            _, kind, label = names[i]
            hits = sorted(groups[names[i]], key=lambda r: -(r["similarity"] if r["similarity"] is not None else -2))
            page.add(f'<div class="query"><div class="ghead">{esc(kind)} {esc(label)}: {len(hits)} selected'
                     '</div><div class="tiles">')
            if kind == "query" and str(label) in q_items:
                page.add(*tile(rep.thumbs.want(q_source, *q_items[str(label)]), "query", kind="query"))
            for r in hits[:cfg.curate_per_sample]:
                thumb = rep.thumbs.want(rep.source, r["key"], r["shard"], r["index"])
                page.add(*tile(thumb, f'{_sim(r["similarity"])}<br>{esc(r["key"])}'))
            page.add("</div></div>")
            shown += 1
    rep.info["curate"] = {"selected": table.num_rows, "samples_shown": shown}
    page.add("</section>")


def extract_section(rep: Report, root: Path) -> None:
    """Provenance, counts, throughput from the markers, failures by reason with the failing keys."""
    cfg = rep.cfg
    store = OutputRoot(root)
    page = rep.index
    page.add('<section id="extract"><h2>Extract</h2>')
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").exists() else {}
    prov, ecfg = config.get("provenance", {}), config.get("config", {})
    weights = prov.get("weights") or {}
    markers = store.markers()
    reasons: Counter = Counter()
    for m in markers:
        reasons.update(m.get("failures_by_reason", {}))
    digest = str(weights.get("sha256", ""))
    facts = [("model", prov.get("model", "")),
             ("weights", " ".join(dict.fromkeys([weights.get("source", ""), digest[:12]]))),
             ("input", f"{prov.get('input_size', '')} {prov.get('resize_mode', '')}"),
             ("input data", ecfg.get("images") or " ".join(ecfg.get("shards") or [])),
             ("fingerprint", prov.get("fingerprint", "")), ("shards done", len(markers)),
             ("samples", sum(m.get("samples", 0) for m in markers)),
             ("feature rows", sum(m.get("rows", 0) for m in markers)),
             ("failures", sum(m.get("failures", 0) for m in markers)),
             ("damaged shards", sum(1 for m in markers if m.get("damage")))]
    last = (json.loads((root / "stats.json").read_text()).get("last_run", {})
            if (root / "stats.json").exists() else {})
    if last.get("failed"):
        facts.append(("shards left undone (last run)", ", ".join(map(str, last["failed"][:20]))))
    if last.get("images_per_second"):
        facts.append(("images/s (last run)", round(float(last["images_per_second"]), 2)))
    page.add(facts_html((k, v) for k, v in facts if str(v).strip()))
    timed = [(m, _parse_time(m.get("finished"))) for m in markers]
    timed = [(m, t) for m, t in timed if t is not None]
    span = (max(t for _, t in timed) - min(t for _, t in timed)).total_seconds() if timed else 0.0
    if span > 0:
        plot_throughput([t for _, t in timed], [m.get("rows", 0) for m, _ in timed], rep.folder / "throughput.png")
        page.add('<div class="plots"><figure class="plot"><img src="throughput.png" alt="throughput over time">'
                 f"<figcaption>{_plural(len(timed), 'shard')} finished over {span:.0f} s (marker finish times, 1 s "
                 "resolution; time before the first shard finished is not seen).</figcaption></figure></div>")
    elif timed:
        page.add(f"<p>{_plural(len(timed), 'shard')} finished within one second: no throughput curve.</p>")
    page.add("<h3>Failures by reason</h3>")
    page.add(table_html(["reason", "count"], sorted(reasons.items(), key=lambda kv: -kv[1]))
             if reasons else "<p>No failures.</p>")
    failures = _read_failures(store, [m["shard"] for m in markers if m.get("failures_by_reason")],
                              cfg.max_failures)
    if failures:
        page.add("<h3>Failing keys</h3>")
        page.add(table_html(["reason", "stage", "key", "shard", "index", "detail"],
                            [[f["reason"], f["stage"], f["key"], f["shard"], f["index"], f["detail"]]
                             for f in failures]))
        n_all = sum(reasons.values())
        if n_all > len(failures):
            page.add(f"<p>{n_all - len(failures)} more in failures/*.parquet.</p>")
    rep.info["extract"] = {"shards": len(markers), "failures": sum(reasons.values())}
    page.add("</section>")


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z") if text else None
    except ValueError:
        return None


def _read_failures(store: OutputRoot, shards: list[str], limit: int) -> list[dict]:
    out: list[dict] = []
    for shard in shards:
        path = store.failure_path(shard)
        if path.exists() and len(out) < limit:
            out += pq.read_table(path).to_pylist()[:limit - len(out)]
    return out


# ------------------------------------------------------------------------------------------------------- run
def run_report(cfg: ReportConfig) -> dict:
    """Write `OUT/report/index.html` (+ dedup-N.html pages, PNG plots, thumbs/); returns what it holds."""
    t0 = time.perf_counter()
    root = Path(cfg.out)
    if not root.is_dir():
        raise MissingInputError(f"{root} does not exist: give an extract output root (OUT)")
    folder = Path(cfg.report or root / "report")
    _clear_previous(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = open_source(root)
    if source is None:
        log.warning("report: %s has no config.json naming its images: thumbnails are left out", root)
    elif source.kind == "folder" and not source.path.is_dir():
        log.warning("report: the image folder %s named in %s/config.json is not here (a relative path is taken "
                    "from the current directory): thumbnails will be missing", source.path, root)
    rep = Report(cfg, folder, source, Thumbnails(folder / THUMBS, cfg.thumb_size))
    rep.index.add(f"<h1>{esc(root.resolve())}</h1>")
    if (root / "dedup" / "groups.parquet").exists():
        rep.sections.append("dedup")
        dedup_section(rep, root / "dedup")
    if cfg.search:
        rep.sections.append("search")
        rep.index.add('<section id="search"><h2>Search</h2>')
        n = search_html(rep.index, rep.thumbs, read_table(cfg.search), source, cfg.search_queries,
                        cfg.search_max_queries)
        rep.info["search"] = {"queries": n}
        rep.index.add("</section>")
    if (root / "curate" / "selected.parquet").exists():
        rep.sections.append("curate")
        curate_section(rep, root / "curate")
    if (root / "_done").is_dir() or (root / "config.json").exists():
        rep.sections.append("extract")
        extract_section(rep, root)
    if not rep.sections:
        rep.index.add("<p>Nothing to report: no dedup, curate or extract outputs here.</p>")
    rep.thumbs.fetch()
    nav = '<a href="index.html">overview</a>' + "".join(f'<a href="index.html#{s}">{s}</a>' for s in rep.sections)
    for name, page in [("index.html", rep.index), *rep.pages.items()]:
        (folder / name).write_text(page.render(nav, cfg.thumb_size), encoding="utf-8")
    info = {"report": str(folder / "index.html"), "sections": rep.sections, "pages": 1 + len(rep.pages),
            "thumbnails": rep.thumbs.written, "unavailable": dict(rep.thumbs.missing), **rep.info,
            "seconds": round(time.perf_counter() - t0, 3)}
    write_json_atomic(info, folder / "report.json")
    return info


def _clear_previous(folder: Path) -> None:
    """Remove what an earlier report wrote (only in a folder that holds our report.json)."""
    if not (folder / "report.json").exists():
        return
    shutil.rmtree(folder / THUMBS, ignore_errors=True)
    for path in [*folder.glob("dedup-*.html"), *folder.glob("*.png"), folder / "index.html"]:
        path.unlink(missing_ok=True)
