"""The report's dedup section: counts, similarity histogram, component sizes, then the groups (paged).

Groups are rows of thumbnails, largest first, the keeper framed; the histogram's outline comes from the k-NN
graph dedup used (the root's own `make knn` graph, or the one in the dedup folder).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dedup.decided import decided_groups
from pipeline.layout import (
    GROUPS,
    KNN_DIR,
    OutputRoot,
    graph_part_files,
    graph_parts_done,
    read_graph_record,
    read_summary,
)
from pipeline.report.html import Page, esc, facts_html, fmt_similarity, tile
from pipeline.report.plots import plot_component_sizes, plot_similarities

if TYPE_CHECKING:
    from pipeline.report.run import Report



def dedup_section(rep: Report, root: OutputRoot) -> None:
    """Counts, the similarity histogram with the threshold, component sizes, then the groups (paged)."""
    dedup = root.dedup_dir
    groups, _ = decided_groups(root.groups_path)  # as duplicates.csv, export and make serve: decisions applied
    summary = read_summary(dedup) or {}
    dcfg = summary.get("config", {})
    threshold = float(dcfg.get("threshold", 0.6))
    stage = summary.get("stages", {}).get("embedding", {})
    note = f" (not applied: embedding stage off, {stage['skipped']})" if stage.get("skipped") else ""
    page = rep.index
    page.add('<section id="dedup"><h2>Dedup</h2>')
    if "warning" in summary:
        page.add(f'<p class="warn">{esc(summary["warning"])}</p>')
    feature = summary.get("feature", dcfg.get("feature", ""))
    facts = [("images", summary.get("images", groups.num_rows)), ("kept", summary.get("kept", "")),
             ("duplicates removed", summary.get("duplicates_removed", "")),
             ("contaminated removed", summary.get("contaminated_removed", "")),
             ("groups", summary.get("groups", "")), ("threshold", f"{threshold:g}{note}"), ("feature", feature)]
    facts += [(f"{k} edges", v.get("edges", 0)) for k, v in summary.get("stages", {}).items()]
    page.add(facts_html(facts))
    graph = find_knn_graph(root, feature or None, groups.num_rows)
    knn = _knn_nearest(graph) if graph is not None else None
    plot_similarities(groups, threshold, note, rep.folder / "nearest_similarity.png", knn)
    sizes = ({int(k): int(v) for k, v in summary["component_sizes"].items()} if "component_sizes" in summary
             else dict(Counter(Counter(groups.column("component").to_pylist()).values())))
    plot_component_sizes(sizes, rep.folder / "component_sizes.png")
    page.add('<div class="plots"><figure class="plot"><img src="nearest_similarity.png" alt="nearest-neighbour '
             'similarity histogram"><figcaption>Nearest-neighbour similarity: put <code>--threshold</code> '
             'between copies and distinct images. Grouped images show their similarity to the nearest image they '
             'are linked to (exact and perceptual copies show where true copies lie); '
             + ('the outline is every image\'s nearest neighbour from the k-NN graph.' if knn is not None else
                'ungrouped images have no <code>nearest_similarity</code> (no k-NN graph in knn/ or dedup/knn).')
             + '</figcaption></figure><figure class="plot"><img src="component_sizes.png" alt="component sizes">'
             '<figcaption>Component sizes (1 = unique images).</figcaption></figure></div>')
    shown, total = _dedup_groups(rep, groups)
    rep.info["dedup"] = {"groups": total, "groups_shown": shown}
    page.add("</section>")


def find_knn_graph(root: OutputRoot, feature: str | None, count: int) -> Path | None:
    """The k-NN graph behind a dedup, where dedup looks for one: the root's own (`make knn`) first, then the
    one dedup built in its folder. A graph of another feature or another number of images is passed over,
    and so is an unfinished one."""
    for folder in (root.knn_dir, root.dedup_dir / KNN_DIR):
        if _graph_fits(folder, feature, count):
            return folder
    return None


def _graph_fits(folder: Path, feature: str | None, count: int) -> bool:
    if not graph_part_files(folder):
        return False
    record = read_graph_record(folder)
    if record is None:  # parts without their record: taken as they are
        return True
    if (feature and record.get("feature") != feature) or record.get("count") != count:
        return False
    part_rows = record.get("part_rows")
    return not part_rows or graph_parts_done(folder) >= -(-count // part_rows)


def _knn_nearest(graph: Path) -> np.ndarray | None:
    parts = graph_part_files(graph)
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
            f"all are in dedup/{GROUPS}.</p>")
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
        caption = (f'{esc(r["key"])}<br>{esc(r["reason"])} · {fmt_similarity(r["nearest_similarity"])}'
                   + (f' to {esc(r["nearest_key"])}' if r["nearest_key"] and not r["keep"] else "")
                   + (f'<span class="why">kept: {esc(r["keep_reason"])}</span>'
                      if r["keep"] and r.get("keep_reason") else ""))
        page.add(*tile(thumb, caption, kind="keeper" if r["keep"] else "", badge=badge))
    page.add("</div>")
    if size > len(rows):
        page.add(f"<p>… and {size - len(rows)} more (component {int(component)} in dedup/{GROUPS})</p>")
    page.add("</div>")
