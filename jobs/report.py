"""`python -m jobs.report`: a static HTML report of an output root (dedup groups, search, curate, extract)."""

from __future__ import annotations

import argparse

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.report --out out/train                     # → out/train/report/index.html
  python -m jobs.report --out out/train --search neighbours.parquet --search-queries queries/
Sections appear for what OUT holds: dedup/groups.parquet (groups, similarity histogram with the threshold,
component sizes), curate/selected.parquet (sampled queries or clusters), the extract markers and failures.
Thumbnails are read from the original images (OUT/config.json) and written beside the HTML: the folder is
self-contained (no server, no network) and can be copied or opened with a browser as a file."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="OUT", help="an extract output root")
    p.add_argument("--report", default=None, metavar="DIR", help="report folder (default: OUT/report)")
    p.add_argument("--search", default=None, metavar="FILE", help="search results (.parquet or .csv, as written "
                                                                   "by python -m jobs.search --out) over OUT")
    p.add_argument("--search-queries", default=None, metavar="PATH",
                   help="where the search's query images are: an image, a folder, or an extract output")
    p.add_argument("--groups-per-page", type=int, default=50, help="(default: %(default)s)")
    p.add_argument("--max-groups", type=int, default=2500, help="largest groups shown (default: %(default)s)")
    p.add_argument("--max-members", type=int, default=24, help="thumbnails per group (default: %(default)s)")
    p.add_argument("--thumb-size", type=int, default=128, help="pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling of curate queries (default: %(default)s)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.report.run import ReportConfig, run_report

        info = run_report(ReportConfig(
            out=args.out, report=args.report, search=args.search, search_queries=args.search_queries,
            groups_per_page=args.groups_per_page, max_groups=args.max_groups, max_members=args.max_members,
            thumb_size=args.thumb_size, seed=args.seed))
        missing = sum(info["unavailable"].values())
        print(f"report: {', '.join(info['sections']) or 'nothing to report'}; {info['pages']} pages, "
              f"{info['thumbnails']} thumbnails" + (f", {missing} images unavailable {info['unavailable']}"
                                                   if missing else "") + f" -> {info['report']}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
