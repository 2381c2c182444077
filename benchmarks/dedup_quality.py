"""Dedup quality on the labelled real-photo folders: pair precision / recall of each dedup stage.

    .venv/bin/python benchmarks/dedup_quality.py                              # tiny random-weight ViT
    .venv/bin/python benchmarks/dedup_quality.py --weights dinov2_vits14_reg4_pretrain.pth --threshold 0.6
    .venv/bin/python benchmarks/dedup_quality.py --sweep 6,8,10,12           # + exact+pHash at other distances
    .venv/bin/python benchmarks/dedup_quality.py --proposed                  # + the transposed-pHash proposal

For each folder of ../shared/data (or --data) with a `groups.csv` (jenssegers_imagehash, imagededup_tests,
pdq_threatexchange):
1. extracts it with run_extract (the tiny 2-block random ViT of tests/conftest.py at 56 px, or the model of
   --model with --weights PATH|hub), into --work/<folder>, from scratch each run;
2. scores three stages on those features:
     exact        sha1 edges only: the stored sha1 column through the pipeline's exact_edges and components
     exact+phash  run_dedup with pHash within --phash-distance (default: DedupConfig's), all 8 turns/flips
                  (embedding off)
     all          run_dedup with the embedding stage too (cosine > --threshold); with random weights the
                  pipeline switches it off, so this row equals exact+phash and says so;
   each run_dedup into its own output folder;
3. scores each against groups.csv: every pair of images in one component is a predicted pair; a true pair is
   two decoded images with the same group id. Files groups.csv does not list are each their own group (its
   README: "files not listed in any group are distinct from each other"); rows of group CORRUPT must come
   out as failures and are not scored. A glob row ("dir/*.(png|jpg) (13 files)") is expanded and its count
   checked. Also reports, per labelled copy, whether it shares a component with its group's original, and
   the false pairs. Two label corrections apply unless --as-labelled (both printed as notes):
     imagededup_tests/alpha_channel_image.png is listed as a singleton "(not a photo)" but is
       base_images/ukbench00120.jpg as a fully opaque RGBA PNG (alpha 255 everywhere, mean |RGB difference|
       0.7/255): it is scored as a member of ukb00120;
     pdq_threatexchange exif-rotn-{1,3,6,8}.jpg are listed as one photo but are four upright shots of one
       desk at different framings (tests/test_real_photos.py): pairs among them are not scored at all.
4. with --proposed, one more row computed here from the stored columns with the pipeline's own
   exact_edges / phash_edges / components: exact + pHash + mirror + the 8x8 transpose of `phash` and of
   `phash_mirror` as extra queries. Transposing the DCT block is a bit permutation of the stored hash (the
   median does not change), so it is (up to resampling) the hash of the transposed image and, of the
   mirrored one, of the image turned by 90 degrees; with the pairs' other direction this covers 5 of the 8
   rotations/flips. This was the proposal measured before the pipeline matched all 8 (the flip and 180°
   hashes are stored now); it is kept as a subset of the exact+phash row, for comparison.

Prints a table and writes --out (default bench_out/dedup_quality.json). Nothing under ../shared/data is
written or copied.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FOLDERS = ("jenssegers_imagehash", "imagededup_tests", "pdq_threatexchange")
# The tiny model of tests/conftest.py (tiny_config): a 2-block, 64-wide DINOv2-reg4 ViT at 56 px.
TINY_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"
TINY_KWARGS = (("depth", 2), ("embed_dim", 64), ("num_heads", 2))
TINY_RES = 56
STAGES = ("exact", "exact+phash", "all")
CORRUPT = "CORRUPT"
# Label corrections (see the module docstring): file → group id it belongs to; files whose pairs are not scored.
RELABEL = {"imagededup_tests": {"alpha_channel_image.png": ("ukb00120", "is base_images/ukbench00120.jpg as an "
                                                           "opaque RGBA PNG, listed as a singleton")}}
AMBIGUOUS = {"pdq_threatexchange": ("reg-test-input/exif-rotn/", "exif-rotn-* are four different shots of one "
                                                                  "desk, listed as one photo: pairs not scored")}


# ------------------------------------------------------------------------------------------ ground truth

def _glob_regex(pattern: str) -> re.Pattern:
    """groups.csv globs: `*` within one path part, `(a|b)` alternatives, everything else literal."""
    out = []
    for ch in pattern:
        out.append({"*": "[^/]*", "?": "[^/]", "(": "(?:", ")": ")", "|": "|"}.get(ch, re.escape(ch)))
    return re.compile("".join(out) + r"\Z")


def read_groups(folder: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """groups.csv → (file → group id, file → relation, notes); globs expanded against the folder's files."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    group, relation, notes = {}, {}, []
    with open(folder / "groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    explicit = {r.get("file") or r.get("file_or_glob") for r in rows}
    for row in rows:
        name = row.get("file") or row.get("file_or_glob")
        gid, rel = row["group_id"], row.get("relation", "")
        m = re.fullmatch(r"(.*?)\s*\((\d+) files\)", name)
        if m or any(c in name for c in "*?|"):  # a glob: files it matches that no row names explicitly
            pattern, want = (m.group(1), int(m.group(2))) if m else (name, None)
            regex = _glob_regex(pattern)
            names = [p for p in files if regex.match(p) and p not in explicit]
            if want is not None and len(names) != want:
                notes.append(f"{name}: expected {want} files, found {len(names)}")
        else:
            names = [name]
        for n in names:
            group.setdefault(n, gid)
            relation.setdefault(n, rel)
    return group, relation, notes


def pairs_of(groups) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups for p in itertools.combinations(sorted(members), 2)}


def score(predicted: set, true: set) -> dict:
    tp = len(predicted & true)
    return {"precision": round(tp / len(predicted), 4) if predicted else None,
            "recall": round(tp / len(true), 4) if true else None,
            "true_positive": tp, "predicted_pairs": len(predicted), "true_pairs": len(true)}


# ------------------------------------------------------------------------------------------------- run

def extract(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    from pipeline.extract.config import ExtractConfig, parse_model_kwargs
    from pipeline.extract.runner import run_extract

    if args.weights == "random":
        kw = dict(model=TINY_MODEL, weights="random", model_kwargs=TINY_KWARGS, resolution=TINY_RES)
    else:
        kw = dict(model=args.model, weights=args.weights, model_kwargs=parse_model_kwargs(args.model_kwargs),
                  resolution=args.resolution)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    stats = run_extract(ExtractConfig(out=str(out), images=str(folder), batch_size=args.batch_size,
                                      workers=args.workers, device=args.device, progress=False, **kw))
    return {"images": stats.images, "failures": stats.failures, "seconds": round(time.perf_counter() - t0, 2)}


def dedup_stage(features: Path, stage: str, args: argparse.Namespace, phash_distance: int):
    """run_dedup for one stage → (groups DataFrame, summary)."""
    import pandas as pd

    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup

    cfg = dict(features=str(features), out=str(features / f"dedup_{stage}"), progress=False,
               threshold=args.threshold, phash_distance=phash_distance)
    if stage.startswith("exact+phash"):
        cfg.update(embedding=False)
    summary = run_dedup(DedupConfig(**cfg)).record
    return pd.read_parquet(Path(cfg["out"]) / "groups.parquet"), summary


def exact_components(features: Path) -> tuple[dict[str, int], dict]:
    """The exact stage alone (run_dedup always runs pHash too): sha1 edges → components."""
    import pandas as pd

    from pipeline.dedup.edges import exact_edges
    from pipeline.dedup.groups import components

    df = pd.read_parquet(features / "features", columns=["key", "shard", "index", "sha1"])
    df = df.sort_values(["shard", "index"]).reset_index(drop=True)
    i, j = exact_edges([bytes(x) for x in df.sha1])
    component, _ = components(len(df), i, j)
    return dict(zip(df.key, component.tolist())), {"exact": int(len(i))}


def evaluate_folder(data: Path, name: str, args: argparse.Namespace, distance: int, sweep: list[int]) -> dict:
    import pandas as pd

    folder = data / name
    group, relation, notes = read_groups(folder)
    out = Path(args.work) / name
    ext = extract(folder, out, args)
    decoded = sorted(pd.read_parquet(out / "features", columns=["key"]).key)
    failures = sorted(pd.read_parquet(out / "failures", columns=["key"]).key) if (out / "failures").exists() else []
    listed_corrupt = sorted(k for k, g in group.items() if g == CORRUPT)
    if set(listed_corrupt) - set(failures):
        notes.append(f"CORRUPT files that decoded: {sorted(set(listed_corrupt) - set(failures))}")
    missing = sorted(k for k, g in group.items() if g != CORRUPT and k not in decoded)
    if missing:
        notes.append(f"listed files with no feature row: {missing}")
    truth = {k: group.get(k, f"unlisted:{k}") for k in decoded}
    ambiguous: set[tuple[str, str]] = set()
    if not args.as_labelled:
        for k, (gid, why) in RELABEL.get(name, {}).items():
            if k in truth:
                truth[k] = gid
                notes.append(f"label correction: {k} → group {gid} ({why})")
        if name in AMBIGUOUS:
            prefix, why = AMBIGUOUS[name]
            ambiguous = pairs_of([[k for k in decoded if k.startswith(prefix)]])
            notes.append(f"not scored: {len(ambiguous)} pairs under {prefix} ({why})")
    by_group: dict[str, list[str]] = {}
    for k, g in truth.items():
        by_group.setdefault(g, []).append(k)
    true = pairs_of(by_group.values()) - ambiguous
    # each labelled copy against its group's original (the first row whose relation starts "original")
    originals = {}
    for k, g in group.items():
        if relation.get(k, "").startswith("original") and g not in originals and k in truth:
            originals[g] = k
    result = {"folder": name, **ext, "decoded": len(decoded), "failed_keys": failures,
              "unlisted": sorted(k for k in decoded if k not in group), "groups": len(by_group),
              "groups_with_copies": sum(len(v) > 1 for v in by_group.values()), "notes": notes, "stages": {}}
    runs = [(s, distance) for s in STAGES] + [(f"exact+phash@{d}", d) for d in sweep]
    if args.proposed:
        runs.append((PROPOSED, distance))
    for stage, d in runs:
        if stage == PROPOSED:
            comp, edges = proposed_components(out, d)
            entry = {"edges": edges, "embedding": "off (proposal: exact + pHash stages only)"}
        elif stage == "exact":
            comp, edges = exact_components(out)
            entry = {"edges": edges, "embedding": "off (exact stage only)"}
        else:
            df, summary = dedup_stage(out, stage, args, d)
            comp = dict(zip(df.key, df.component))
            entry = {"edges": {k: v.get("edges", 0) for k, v in summary["stages"].items()}}
            if summary["stages"]["embedding"].get("skipped"):
                entry["embedding"] = f"skipped ({summary['stages']['embedding']['skipped']})"
            else:
                entry["embedding"] = f"on, threshold {summary['stages']['embedding']['threshold']}"
            result["weights"], result["model"] = summary["weights"], summary["model"]
        members: dict[int, list[str]] = {}
        for k, c in comp.items():
            members.setdefault(c, []).append(k)
        predicted = pairs_of(members.values()) - ambiguous
        entry = {**score(predicted, true), **entry}
        if stage != "exact":
            entry["phash_distance"] = d
        entry["false_pairs"] = sorted(predicted - true)
        entry["copies_found"] = {
            k: comp[k] == comp[originals[g]] for k, g in sorted(truth.items())
            if g in originals and k != originals[g]}
        result["stages"][stage] = entry
    return result


PROPOSED = "proposed:+transpose"


def transpose64(hashes):
    """Per 64-bit pHash, the hash of the 8x8 DCT block transposed (row-major bits → column-major)."""
    import numpy as np

    bits = np.unpackbits(np.asarray(hashes, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    bits = bits.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def proposed_components(features: Path, distance: int) -> tuple[dict[str, int], dict]:
    """exact + pHash with mirror, transpose(phash) and transpose(phash_mirror) queries → components."""
    import numpy as np
    import pandas as pd

    from pipeline.dedup.edges import exact_edges, phash_edges
    from pipeline.dedup.groups import components

    df = pd.read_parquet(features / "features", columns=["key", "shard", "index", "sha1", "phash", "phash_mirror"])
    df = df.sort_values(["shard", "index"]).reset_index(drop=True)
    ph, mirror = df.phash.to_numpy(np.uint64), df.phash_mirror.to_numpy(np.uint64)
    i, j = exact_edges([bytes(x) for x in df.sha1])
    src, dst, edges = [i], [j], {"exact": int(len(i))}
    for name, extra in (("phash", mirror), ("phash_transposed", transpose64(ph)),
                        ("phash_mirror_transposed", transpose64(mirror))):
        i, j = phash_edges(ph, distance, extra)
        src.append(i)
        dst.append(j)
        edges[name] = int(len(i))
    component, _ = components(len(df), np.concatenate(src), np.concatenate(dst))
    return dict(zip(df.key, component.tolist())), edges


def totals(results: list[dict]) -> dict:
    out = {}
    for stage in results[0]["stages"]:
        tp = sum(r["stages"][stage]["true_positive"] for r in results)
        pred = sum(r["stages"][stage]["predicted_pairs"] for r in results)
        true = sum(r["stages"][stage]["true_pairs"] for r in results)
        out[stage] = {"precision": round(tp / pred, 4) if pred else None, "recall": round(tp / true, 4) if true
                      else None, "true_positive": tp, "predicted_pairs": pred, "true_pairs": true}
    return out


def fmt(x) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("DINOCURATE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--folders", default=",".join(FOLDERS), help="comma-separated (default: %(default)s)")
    p.add_argument("--weights", default="random",
                   help="random (default: the tiny test ViT; embedding stage off) | PATH | hub (with --model)")
    p.add_argument("--model", default=None, help="timm model for --weights PATH|hub (default: the pipeline's)")
    p.add_argument("--model-kwargs", default=None)
    p.add_argument("--resolution", type=int, default=None, help="for --weights PATH|hub (default: the model's)")
    p.add_argument("--phash-distance", type=int, default=None, help="(default: DedupConfig's)")
    p.add_argument("--sweep", default="", help="extra exact+pHash runs at these distances, e.g. 6,8,10,12")
    p.add_argument("--threshold", type=float, default=None, help="embedding cosine (default: DedupConfig's)")
    p.add_argument("--proposed", action="store_true", help="+ a row for the transposed-pHash proposal (see 4.)")
    p.add_argument("--as-labelled", action="store_true", help="score groups.csv as written, no corrections")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default=str(ROOT / "bench_out" / "dedup_quality_work"),
                   help="extract + dedup outputs, one folder per data folder (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench_out" / "dedup_quality.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    from pipeline.dedup.config import DedupConfig
    from pipeline.extract.config import DEFAULT_MODEL

    defaults = DedupConfig(features="")
    args.model = args.model or DEFAULT_MODEL
    args.threshold = defaults.threshold if args.threshold is None else args.threshold
    distance = defaults.phash_distance if args.phash_distance is None else args.phash_distance
    sweep = [int(d) for d in args.sweep.split(",") if d.strip()]
    data = Path(args.data)
    names = [n for n in args.folders.split(",") if n]
    absent = [n for n in names if not (data / n / "groups.csv").exists()]
    if absent:
        print(f"error: no groups.csv in {', '.join(str(data / n) for n in absent)}", file=sys.stderr)
        return 2

    results = [evaluate_folder(data, n, args, distance, sweep) for n in names]
    weights = results[0]["weights"]
    if args.weights == "random":
        used = (f"random (seeded init; tiny {TINY_MODEL} depth 2, width 64, {TINY_RES} px): the embedding stage "
                f"is off, 'all' = exact+phash")
    else:
        used = f"{weights.get('source')} {weights.get('path') or args.weights} sha256 {weights.get('sha256')}"
    print(f"weights: {used}")
    print(f"model: {results[0]['model']}; pHash distance {distance}; embedding threshold {args.threshold}")
    print(f"\n{'folder':22s} {'stage':20s} {'precision':>9s} {'recall':>7s} {'tp':>5s} {'pred':>5s} {'true':>5s}")
    tot = totals(results)
    for r in results + [{"folder": "TOTAL (pairs summed)", "stages": tot}]:
        for stage, s in r["stages"].items():
            print(f"{r['folder']:22s} {stage:20s} {fmt(s['precision']):>9s} {fmt(s['recall']):>7s} "
                  f"{s['true_positive']:5d} {s['predicted_pairs']:5d} {s['true_pairs']:5d}")
    for r in results:
        print(f"\n{r['folder']}: {r['decoded']} images, {len(r['failed_keys'])} failures, {r['groups']} groups "
              f"({r['groups_with_copies']} with copies), extract {r['seconds']} s")
        for stage in [x for x in ("all", PROPOSED) if x in r["stages"]]:
            s = r["stages"][stage]
            missed = [k for k, found in s["copies_found"].items() if not found]
            print(f"  {stage}: {len(s['copies_found']) - len(missed)}/{len(s['copies_found'])} labelled copies "
                  f"share a component with their original; missed: {', '.join(missed) or '-'}")
            if s["false_pairs"]:
                print(f"    false pairs: {', '.join(' ~ '.join(p) for p in s['false_pairs'][:10])}"
                      f"{' ...' if len(s['false_pairs']) > 10 else ''}")
        for note in r["notes"]:
            print(f"  note: {note}")
    report = {"weights_used": used, "weights": weights, "model": results[0]["model"], "phash_distance": distance,
              "threshold": args.threshold, "label_corrections": not args.as_labelled, "data": str(data),
              "folders": results, "total": tot, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
