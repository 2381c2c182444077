"""`python -m jobs.search`: the k nearest indexed images of a query image, folder, shards or feature root."""

from __future__ import annotations

import argparse

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.search --index out/train/index --query photo.jpg --k 10
  python -m jobs.search --index out/train --query queries/ --k 5 --out neighbours.csv
Image queries are extracted with the model, weights and preprocessing the index records."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.search", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="index folder (or the extract output holding index/)")
    p.add_argument("--query", required=True, help="an image, an image folder, shard specs, or an extract output")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the results (.csv or .parquet)")
    p.add_argument("--html", default=None, metavar="PATH",
                   help="also write the neighbours as a web page (thumbnails in thumbs/ beside it)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)

    def job() -> int:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        from pipeline.index.search import run_search

        table = run_search(args.index, args.query, args.k)
        rows = table.to_pylist()
        width = max([len(r["key"]) for r in rows] + [3])
        current = None
        for r in rows:
            if r["query"] != current:
                current = r["query"]
                print(f"\nquery: {current}")
                print(f"  {'rank':>4}  {'similarity':>10}  {'key':<{width}}  shard")
            print(f"  {r['rank']:>4}  {r['similarity']:>10.4f}  {r['key']:<{width}}  {r['shard']}")
        if args.out:
            (pq.write_table if args.out.endswith(".parquet") else pacsv.write_csv)(table, args.out)
            print(f"\nwritten: {args.out}")
        if args.html:
            from pipeline.report.run import index_features_root, write_search_page

            page = write_search_page(table, args.html, index_features_root(args.index), query_source=args.query)
            print(f"written: {page}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
