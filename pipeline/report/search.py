"""Search results as HTML: each query (its image when its source is known) and its neighbours.

`write_search_page` is the page `python -m jobs.search --html` writes; `search_html` is also the report's
search section.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.index.search import QUERY_METADATA
from pipeline.io.tables import read_user_table
from pipeline.layout import OutputRoot
from pipeline.report.html import Page, esc, fmt_similarity, tile
from pipeline.report.thumbnails import THUMBS, Thumbnails
from pipeline.roots.sources import ImageSource, Item, key_locations, open_source

log = logging.getLogger(__name__)


def read_table(path: str | os.PathLike) -> pa.Table:
    """A search result table (.parquet, or .csv with keys kept as text: `00012` must not become 12)."""
    what = "search result table (--search: .parquet or .csv from search --out)"
    if str(path).endswith(".csv"):
        import pyarrow.csv as pacsv

        text = {c: pa.string() for c in ("query", "key", "shard")}
        return read_user_table(path, what, lambda p: pacsv.read_csv(
            p, convert_options=pacsv.ConvertOptions(column_types=text)))
    return read_user_table(path, what, pq.read_table)


def recorded_query(path: str | os.PathLike) -> str | None:
    """Where a result Parquet's queries came from, as `search --out` recorded it; None for CSV or older files."""
    if str(path).endswith(".csv"):
        return None
    raw = (pq.read_schema(path).metadata or {}).get(QUERY_METADATA)
    try:
        return json.loads(raw).get("query") if raw else None
    except ValueError:
        return None


def search_html(page: Page, thumbs: Thumbnails, table: pa.Table, source: ImageSource | None,
                query_source: str | None, max_queries: int) -> int:
    """Each query (its image when `query_source` locates it) and its neighbours with similarities."""
    rows = table.to_pylist()
    by_query: dict[str, list[dict]] = {}
    for r in rows:
        by_query.setdefault(str(r["query"]), []).append(r)
    q_source, q_items = query_items(query_source, list(by_query)[:max_queries])
    for q, hits in list(by_query.items())[:max_queries]:
        page.add(f'<div class="query" data-query="{esc(q)}"><div class="ghead">query: {esc(q)}</div>'
                 '<div class="tiles">')
        if q in q_items:
            page.add(*tile(thumbs.want(q_source, *q_items[q]), "query", kind="query"))
        for r in sorted(hits, key=lambda r: r["rank"]):
            thumb = thumbs.want(source, str(r["key"]), str(r.get("shard") or ""), int(r.get("index") or 0))
            page.add(*tile(thumb, f'#{int(r["rank"])} · {fmt_similarity(r["similarity"])}<br>{esc(r["key"])}'))
        page.add("</div></div>")
    if len(by_query) > max_queries:
        page.add(f"<p>{len(by_query) - max_queries} more queries are not shown.</p>")
    return len(by_query)


def query_items(query_source: str | None, keys: list[str]) -> tuple[ImageSource | None, dict[str, Item]]:
    """Where the query images are: one file (any key), a folder (key = relative path), or an extract root."""
    if not query_source:
        return None, {}
    path = Path(query_source)
    if OutputRoot(path).features.is_dir():
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
    are the neighbours; `pipeline.layout.features_root_of_index` names it); `query_source` the image, folder
    or extract output the queries came from."""
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
