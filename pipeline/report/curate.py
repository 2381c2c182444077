"""The report's curate section: per seed set, what it selected for a seeded sample of its queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from pipeline.layout import SELECTED, OutputRoot, read_summary
from pipeline.report.html import esc, fmt_similarity, table_html, tile
from pipeline.report.search import query_items

if TYPE_CHECKING:
    from pipeline.report.run import Report



def curate_section(rep: Report, root: OutputRoot) -> None:
    """Per seed set: what it selected, for a seeded sample of its queries (or clusters)."""
    cfg = rep.cfg
    curate = root.curate_dir
    table = pq.read_table(curate / SELECTED)
    summary = read_summary(curate) or {}
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
        q_source, q_items = query_items(roots.get(source), [str(names[i][2]) for i in pick
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
                page.add(*tile(thumb, f'{fmt_similarity(r["similarity"])}<br>{esc(r["key"])}'))
            page.add("</div></div>")
            shown += 1
    rep.info["curate"] = {"selected": table.num_rows, "samples_shown": shown}
    page.add("</section>")
