"""`python -m jobs.report`: a static HTML report of an output root (dedup groups, search, curate, extract)."""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.report --out out/train                     # → out/train/report/index.html
  python -m jobs.report --out out/train --search neighbours.parquet --search-queries queries/
Sections appear for what OUT holds: dedup/groups.parquet (groups, similarity histogram with the threshold,
component sizes), curate/selected.parquet (sampled queries or clusters), the extract markers and failures.
Thumbnails are read from the original images (OUT/config.json) and written beside the HTML: the folder is
self-contained (no server, no network) and can be copied or opened with a browser as a file."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.report.config import ReportConfig

    p.add_argument("--out", required=True, metavar="OUT", help="an extract output root")
    option(p, ReportConfig, "report", "report folder (default: OUT/report)", metavar="DIR")
    option(p, ReportConfig, "search", "search results (.parquet or .csv, as written by python -m jobs.search "
                                      "--out) over OUT", metavar="FILE")
    option(p, ReportConfig, "search_queries", "where the search's query images are: an image, a folder, or an "
                                              "extract output", metavar="PATH")
    option(p, ReportConfig, "groups_per_page", "dedup groups per page (default: %(default)s)")
    option(p, ReportConfig, "max_groups", "largest groups shown (default: %(default)s)")
    option(p, ReportConfig, "max_members", "thumbnails per group (default: %(default)s)")
    option(p, ReportConfig, "thumb_size", "pixels (default: %(default)s)")
    option(p, ReportConfig, "seed", "sampling of curate queries (default: %(default)s)")
    add_running_args(p, ReportConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.report.config import ReportConfig
    from pipeline.report.run import run_report

    done = run_report(config_from(ReportConfig, args))
    missing = sum(done.unavailable.values())
    print(f"report: {', '.join(done.sections) or 'nothing to report'}; {done.pages} pages, "
          f"{done.thumbnails} thumbnails" + (f", {missing} images unavailable {done.unavailable}"
                                             if missing else "") + f" -> {done.page}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
