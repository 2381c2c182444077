"""`python -m jobs.apply`: act on a folder's dedup: move the duplicates aside (or link the keepers), undoably.

Reads OUT/dedup/groups.parquet with the review's decisions (make serve) applied, and the image folder OUT was
extracted from. A dry run unless --yes: it prints what would happen and the bytes freed. Each file must still
have the sha1 recorded at extract (changed or missing files are skipped and listed, never moved). A manifest
(OUT/apply/manifest-<time>.parquet) is written before each batch, so --undo puts every file back, also after
a crash in the middle. Nothing is ever deleted.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from jobs._args import add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.apply --out out/photos                         # dry run: what would move, bytes freed
  python -m jobs.apply --out out/photos --yes                   # move duplicates to photos.duplicates/
  python -m jobs.apply --out out/photos --move-to /tmp/dupes --yes
  python -m jobs.apply --out out/photos --link-keepers photos-deduped --yes   # the collection is untouched
  python -m jobs.apply --undo out/photos/apply/manifest-20250101-120000.parquet
moved: the duplicates of each group (as duplicates.csv lists them) and the images of contaminated groups
(--reference). For a root extracted from shards, write the kept samples as new shards with make export."""

if TYPE_CHECKING:
    from pipeline.apply.config import ApplyConfig
    from pipeline.apply.run import ApplyResult

SHOWN = 10  # skipped / failed files listed on the terminal (all of them are in the manifest)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.apply.config import ApplyConfig

    option(p, ApplyConfig, "out", "output root of make dedup IMAGES=DIR (or make extract IMAGES=DIR + make dedup)",
           metavar="OUT")
    mode = p.add_argument_group("what to do (default: move the duplicates beside the collection)")
    option(mode, ApplyConfig, "move_to", "quarantine folder, outside the collection; each duplicate keeps its "
                                         "relative path (default: <images>.duplicates beside the folder)",
           metavar="DIR")
    option(mode, ApplyConfig, "link_keepers", "instead: hard-link every kept image into this new folder (copies "
                                              "across file systems); the collection is untouched", metavar="DIR")
    option(mode, ApplyConfig, "yes", "act (without it: a dry run that changes nothing)")
    option(mode, ApplyConfig, "undo", "put back every file this manifest records as moved (or remove the links "
                                      "it made); never overwrites", metavar="MANIFEST")
    add_running_args(p, ApplyConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.apply.config import ApplyConfig
    from pipeline.apply.run import run_apply

    cfg = config_from(ApplyConfig, args)
    result = run_apply(cfg)
    print_result(result, cfg)
    return 1 if result.failed else 0


def size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def print_result(r: ApplyResult, cfg: ApplyConfig) -> None:
    if r.mode == "undo":
        what = (f"restored {r.done} files to {r.folder} ({size(r.bytes)}), {r.already} never moved"
                if r.undone == "move" else f"removed {r.done} links from {r.target}, {r.already} not there")
        print(f"apply --undo: {what}, {len(r.failed)} left as they are; manifest updated: {r.manifest}")
    else:
        what = (f"{r.done} duplicates ({r.contaminated} of them contaminated) from {r.folder} to {r.target}"
                if r.mode == "move" else f"{r.done} kept images of {r.folder} into {r.target}")
        freed = (f", {'freeing' if r.dry_run else 'freed'} {size(r.bytes)}" if r.mode == "move"
                 else f" ({size(r.bytes)}; hard links take no space)")
        head = f"apply (dry run): would {r.mode}" if r.dry_run else f"apply: {r.mode.rstrip('e')}ed"
        print(f"{head} {what}{freed}")
    for src, dst in r.examples:
        print(f"  {src} -> {dst}")
    if r.done > len(r.examples):
        print(f"  ... and {r.done - len(r.examples)} more")
    if r.already and r.mode != "undo":
        print(f"  {r.already} already moved by an earlier apply (nothing to do for them)")
    for label, rows in (("skipped (left alone)", r.skipped), ("FAILED (left in place)", r.failed)):
        if rows:
            print(f"  {label}: {len(rows)}")
            for path, why in rows[:SHOWN]:
                print(f"    {path}: {why}")
            if len(rows) > SHOWN:
                print(f"    ... and {len(rows) - SHOWN} more" + (" (all in the manifest)" if r.manifest else ""))
    if r.mode != "undo" and r.dry_run:
        print(f"nothing was changed: add --yes to act (make apply OUT={cfg.out} ARGS='--yes')")
    elif r.mode != "undo" and r.manifest:
        print(f"  manifest: {r.manifest} (undo: dinocurate apply --undo {r.manifest})")


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
