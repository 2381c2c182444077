"""`python -m jobs.search`: the k nearest indexed images of a query image, folder, shards or feature root."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.search --index out/train/index --query photo.jpg --k 10
  python -m jobs.search --index out/train --query queries/ --k 5 --out neighbours.csv --html neighbours.html
Image queries are extracted with the model, weights and preprocessing the index records."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.index.config import SearchConfig

    p.add_argument("--index", required=True, help="index folder (or the extract output holding index/)")
    p.add_argument("--query", required=True, help="an image, an image folder, shard specs, or an extract output")
    option(p, SearchConfig, "k", "neighbours per query (default: %(default)s)")
    option(p, SearchConfig, "out", "also write the results (.csv or .parquet)")
    option(p, SearchConfig, "html", "also write the neighbours as a web page (thumbnails in thumbs/ beside it)",
           metavar="PATH")
    add_running_args(p, SearchConfig, log_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from pipeline.index.config import SearchConfig
    from pipeline.index.search import format_results, run_search, write_results

    cfg = config_from(SearchConfig, args)
    table = run_search(cfg.index, cfg.query, cfg.k)
    print(format_results(table))
    if cfg.out:
        write_results(table, cfg.out, query=cfg.query)
        print(f"\nwritten: {cfg.out}")
    if cfg.html:
        from pipeline.layout import features_root_of_index
        from pipeline.report.search import write_search_page

        page = write_search_page(table, cfg.html, features_root_of_index(cfg.index), query_source=cfg.query)
        print(f"written: {page}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
