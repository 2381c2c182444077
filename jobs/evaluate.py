"""`python -m jobs.evaluate`: weighted k-NN (DINO) and linear-probe accuracy of extracted features on labels."""

from __future__ import annotations

import argparse

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.evaluate --features out/photos                      # labels from the folders: class_name/...
  python -m jobs.evaluate --features out/train --labels labels.csv   # key,label[,split] (CSV or Parquet)
  python -m jobs.evaluate --features out/x --feature cls,patch_mean,concat --val-fraction 0.2 --seed 0
  python -m jobs.evaluate --compare out/fp16 out/fp32 out/res518     # side by side, same labels and split
writes FEATURES/eval/results.json (--compare: FIRST/eval/compare.json; or --out DIR).

labels: --labels folder (default) takes the first path component of each key of a folder extract
(ImageFolder: class_name/...). Webdataset `cls`/`txt` members are not stored with the features:
put them in a labels file (columns key,label) and pass --labels FILE.
split: a `split` column (train/val) in the labels file fixes it; otherwise it is drawn per class,
seeded (--val-fraction, --seed), and a class with one image stays in train.
Keys without a label and labels without features are counted, logged and left out; with --compare only
keys present in every feature set are used, so every column sees the same images and the same split."""


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> None:
    from pipeline.evaluate.run import KS, WEIGHT_DECAYS

    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="OUT", help="an extract output root")
    src.add_argument("--compare", nargs="+", metavar="OUT", help="several extract output roots, side by side")
    p.add_argument("--labels", default="folder", help="'folder' (default) or a CSV/Parquet file: key,label[,split]")
    p.add_argument("--feature", default="cls",
                   help="cls | patch_mean | concat, or a comma list of them (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="seeded stratified split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=_ints, default=KS, help="k-NN k values (default: 10,20,100,200)")
    p.add_argument("--temperature", type=float, default=0.07, help="k-NN vote temperature (default: %(default)s)")
    p.add_argument("--weight-decays", type=_floats, default=WEIGHT_DECAYS,
                   help="linear probe sweep, chosen on a held-out part of train (default: 1e-6,...,1e-1)")
    p.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations per fit (default: %(default)s)")
    p.add_argument("--no-knn", dest="knn", action="store_false")
    p.add_argument("--no-linear", dest="linear", action="store_false")
    p.add_argument("--out", default=None, help="results folder (default: FEATURES/eval)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.evaluate.run import EvalConfig, format_results, run_evaluate

        roots = tuple(args.compare) if args.compare else (args.features,)
        results = run_evaluate(EvalConfig(
            features=roots, labels=args.labels, feature=tuple(f.strip() for f in args.feature.split(",")),
            ks=tuple(sorted(set(args.k))), temperature=args.temperature, val_fraction=args.val_fraction, seed=args.seed,
            knn=args.knn, linear=args.linear, weight_decays=args.weight_decays, max_iter=args.max_iter,
            out=args.out))
        print(format_results(results))
        print(f"-> {results['path']}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
