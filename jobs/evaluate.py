"""`python -m jobs.evaluate`: weighted k-NN (DINO) and linear-probe accuracy of extracted features on labels."""

from __future__ import annotations

import argparse

from jobs._args import FEATURES_HELP, add_keys_arg, add_running_args, comma_list, config_from, default, option, shown
from jobs._cli import run_command

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.evaluate.config import EvalConfig

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="FEATURES", help=FEATURES_HELP)
    src.add_argument("--compare", nargs="+", metavar="FEATURES", help="several extract output roots (or features "
                                                                        "made elsewhere), side by side")
    add_keys_arg(p, EvalConfig)
    option(p, EvalConfig, "labels", "'folder' or a CSV/Parquet file: key,label[,split] (default: %(default)s)")
    option(p, EvalConfig, "feature", "cls | patch_mean | concat (or a vector column of Parquet made elsewhere), or "
                                     f"a comma list of them (default: {shown(default(EvalConfig, 'feature'))})",
           type=comma_list())
    option(p, EvalConfig, "val_fraction", "seeded stratified split (default: %(default)s)")
    option(p, EvalConfig, "seed", "(default: %(default)s)")
    option(p, EvalConfig, "ks", f"k-NN k values (default: {shown(default(EvalConfig, 'ks'))})", flag="--k",
           type=comma_list(int))
    option(p, EvalConfig, "temperature", "k-NN vote temperature (default: %(default)s)")
    option(p, EvalConfig, "weight_decays", "linear probe sweep, chosen on a held-out part of train "
                                           f"(default: {shown(default(EvalConfig, 'weight_decays'))})",
           type=comma_list(float))
    option(p, EvalConfig, "max_iter", "L-BFGS iterations per fit (default: %(default)s)")
    option(p, EvalConfig, "knn", "skip the weighted k-NN")
    option(p, EvalConfig, "linear", "skip the linear probe")
    option(p, EvalConfig, "out", "results folder (default: FEATURES/eval)")
    add_running_args(p, EvalConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.evaluate.config import EvalConfig
    from pipeline.evaluate.run import run_evaluate

    roots = tuple(args.compare) if args.compare else (args.features,)
    done = run_evaluate(config_from(EvalConfig, args, features=roots, ks=tuple(sorted(set(args.ks)))))
    print(done.text)
    print(f"-> {done.path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
