"""Search pages (`jobs.search --html`): one query or all, their images, a lost image source, CSV keys as text."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.report.search import read_table, write_search_page
from tests.report.pages import Collect, thumbnails_by_key


def test_one_query_page_shows_the_query_and_its_neighbours(searched, tmp_path):
    out, _, table, _ = searched
    page = write_search_page(table, tmp_path / "s" / "k03.html", out, query="k03", query_source=str(out))
    text = page.read_text()
    c = Collect()
    c.feed(text)
    assert len(c.links) == 1 + 3 and all((page.parent / link).is_file() for link in c.links)
    assert "query: k03" in text and "query: k02" not in text
    neighbours = table.filter(pc.equal(table.column("query"), "k03")).column("key").to_pylist()
    assert set(thumbnails_by_key(text)) == {"k03", *neighbours}
    assert 'class="tile query" data-key="k03"' in text  # the query's own image, framed as the query


def test_every_query_when_none_is_named(searched, tmp_path):
    out, colour, table, _ = searched
    page = write_search_page(table, tmp_path / "all.html", out, query_source=str(out))
    text = page.read_text()
    assert all(f'data-query="{k}"' in text for k in colour) and "more queries are not shown" not in text


def test_a_lost_image_source_and_an_unknown_query(searched, tmp_path):
    _, _, table, _ = searched
    lost = write_search_page(table, tmp_path / "lost" / "k03.html", tmp_path / "nowhere", query="k03")
    assert "<img" not in lost.read_text() and lost.read_text().count("image unavailable") == 3
    with pytest.raises(InputError, match="'nope' is not in the search results"):
        write_search_page(table, tmp_path / "x.html", None, query="nope")


def test_read_table_keeps_keys_as_text(tmp_path):
    (tmp_path / "r.csv").write_text("query,rank,similarity,key,shard,index\n00012,1,0.5,007,0001,3\n")
    table = read_table(tmp_path / "r.csv")
    assert table.column("query").to_pylist() == ["00012"] and table.column("key").to_pylist() == ["007"]
    assert table.column("shard").to_pylist() == ["0001"] and table.column("index").to_pylist() == [3]
    pq.write_table(table, tmp_path / "r.parquet")
    assert read_table(tmp_path / "r.parquet").equals(table)
