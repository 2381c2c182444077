"""Every subcommand against a table of bad inputs: exit 2, one `error:` line, no traceback (issue 26).

The table is data: the next mistake a user finds is one more row. Each row is a command, its arguments and
the mistake in words (the test id), optionally words its error line must (not) hold; `{name}` in the arguments is
a path that `make_paths` makes once per module (missing ones, paths with a quote, space, `$` or non-ASCII, a text
file, a JPEG, a .npy, an empty folder and file, a read-only folder, a tiny extract output root with its index and
dedup). Rows run in this process as `dinocurate` runs them (jobs.cli.main: parse, then the job under run_job);
the read-only rows run together in one child process, which as root drops the capability that lets root write
through permission bits.

What is counted on stderr: every line but INFO log lines, progress bars, argparse's usage block (above its own
one-line error) and the warning that features come from random weights (true of every row's tiny model). What
is left must be exactly one `error:` line of at most LONGEST characters, with exit status 2 and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from jobs import cli
from tests.conftest import make_image, tiny_config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Row:
    command: str
    argv: tuple[str, ...]  # after the command; `{name}` is a path of `make_paths`
    checks: str  # the mistake, in words: the test id
    says: str = ""  # a part of the error line, where the right words matter (a message that misled before)
    not_says: str = ""  # words the error line must not hold (what misled before)
    marks: tuple = ()

    @property
    def read_only(self) -> bool:
        return any("{ro}" in a for a in self.argv)


def R(command: str, *argv: str, checks: str, says: str = "", not_says: str = "", open_bug: str = "") -> Row:
    """A row; `open_bug`: it fails today for this reason, not fixed yet (a strict xfail: fixing it flips it)."""
    marks: tuple = ()
    if open_bug:
        marks += (pytest.mark.xfail(strict=True, reason=open_bug),)
    return Row(command, argv, checks, says, not_says, marks)


TINY = ("--model", "vit_small_patch14_reg4_dinov2.lvd142m", "--weights", "random",
        "--model-kwargs", "depth=2,embed_dim=64,num_heads=2")

ROWS: list[Row] = [
    R("extract", "--images", "{missing}", "--out", "{new}", *TINY, checks="images missing"),
    R("extract", "--images", "{jpg}", "--out", "{new}", *TINY, checks="images is a file"),
    R("extract", "--images", "{empty_dir}", "--out", "{new}", *TINY, checks="images empty folder"),
    R("extract", "--images", "{quote}", "--out", "{new}", *TINY, checks="images quote missing"),
    R("extract", "--images", "{space}", "--out", "{new}", *TINY, checks="images space missing"),
    R("extract", "--images", "{dollar}", "--out", "{new}", *TINY, checks="images dollar missing"),
    R("extract", "--images", "{unicode}", "--out", "{new}", *TINY, checks="images unicode missing"),
    R("extract", "--shards", "{missing}", "--out", "{new}", *TINY, checks="shards missing",
      says="shard '{missing}' does not exist"),
    R("extract", "--shards", "{space}", "--out", "{new}", *TINY, checks="shards space missing",
      says="shard '{space}' does not exist"),
    R("extract", "--shards", "{empty_dir}", "--out", "{new}", *TINY, checks="shards empty folder"),
    R("extract", "--shards", "{empty_file}", "--out", "{new}", *TINY, checks="shards empty file"),
    R("extract", "--shards", "{text}", "--out", "{new}", *TINY, checks="shards text file"),
    R("extract", "--shards", "{jpg}", "--out", "{new}", *TINY, checks="shards jpeg"),
    R("extract", "--shards", "{npy}", "--out", "{new}", *TINY, checks="shards npy",
      says="is not a shard"),
    R("extract", "--images", "{photos}", "--out", "{text}", *TINY, checks="out is a file"),
    R("extract", "--images", "{photos}", "--out", "{text}/below", *TINY, checks="out below a file"),
    R("extract", "--images", "{photos}", "--out", "{ro}/out", *TINY, checks="out read-only"),
    R("extract", "--images", "{photos}", "--out", "{new}", "--weights", "{missing}", checks="weights missing"),
    R("extract", "--images", "{photos}", "--out", "{new}", "--weights", "{text}", checks="weights text"),
    R("extract", "--images", "{photos}", "--out", "{new}", "--weights", "{photos}", checks="weights folder"),
    R("pack", "--images", "{missing}", "--out", "{new}", checks="images missing"),
    R("pack", "--images", "{jpg}", "--out", "{new}", checks="images is a file"),
    R("pack", "--images", "{empty_dir}", "--out", "{new}", checks="images empty folder"),
    R("pack", "--images", "{quote}", "--out", "{new}", checks="images quote missing"),
    R("pack", "--images", "{unicode}", "--out", "{new}", checks="images unicode missing"),
    R("pack", "--images", "{photos}", "--out", "{text}", checks="out is a file"),
    R("pack", "--images", "{photos}", "--out", "{ro}/shards", checks="out read-only"),
    R("index", "--features", "{missing}", checks="features missing"),
    R("index", "--features", "{dollar}", checks="features dollar missing"),
    R("index", "--features", "{space}", checks="features space missing"),
    R("index", "--features", "{empty_dir}", checks="features empty folder"),
    R("index", "--features", "{empty_file}", checks="features empty file", says="is not a readable Parquet file"),
    R("index", "--features", "{text}", checks="features text file"),
    R("index", "--features", "{jpg}", checks="features jpeg"),
    R("index", "--features", "{photos}", checks="features image folder"),
    R("index", "--features", "{npy}", "--keys", "{missing}", checks="keys missing"),
    R("index", "--features", "{npy}", "--keys", "{jpg}", checks="keys jpeg", says="is not a text file"),
    R("index", "--features", "{npy}", "--keys", "{photos}", checks="keys folder", says="is a folder"),
    R("index", "--features", "{root}", "--out", "{text}", checks="out is a file"),
    R("index", "--features", "{root}", "--out", "{ro}/index", checks="out read-only"),
    R("search", "--index", "{missing}", "--query", "{jpg}", checks="index missing"),
    R("search", "--index", "{jpg}", "--query", "{jpg}", checks="index jpeg"),
    R("search", "--index", "{text}", "--query", "{jpg}", checks="index text file"),
    R("search", "--index", "{empty_dir}", "--query", "{jpg}", checks="index empty folder"),
    R("search", "--index", "{photos}", "--query", "{jpg}", checks="index image folder"),
    R("search", "--index", "{root}", "--query", "{missing}", checks="query missing"),
    R("search", "--index", "{root}", "--query", "{quote}", checks="query quote missing"),
    R("search", "--index", "{root}", "--query", "{empty_dir}", checks="query empty folder"),
    R("search", "--index", "{root}", "--query", "{text}", checks="query text file"),
    R("search", "--index", "{root}", "--query", "{npy}", checks="query npy", not_says="query_image"),
    R("search", "--index", "{root}", "--query", "{jpg}", "--out", "{text}/r.csv", checks="out below a file"),
    R("search", "--index", "{root}", "--query", "{jpg}", "--out", "{ro}/r.csv", checks="out read-only"),
    R("knn", "--features", "{missing}", checks="features missing"),
    R("knn", "--features", "{jpg}", checks="features jpeg"),
    R("knn", "--features", "{empty_dir}", checks="features empty folder"),
    R("knn", "--features", "{root}", "--index", "{missing}", checks="index missing"),
    R("knn", "--features", "{root}", "--index", "{jpg}", checks="index jpeg"),
    R("knn", "--features", "{root}", "--index", "{empty_dir}", checks="index empty folder"),
    R("knn", "--features", "{root}", "--out", "{text}", checks="out is a file"),
    R("knn", "--features", "{root}", "--out", "{ro}/knn", checks="out read-only"),
    R("dedup", "--features", "{missing}", checks="features missing"),
    R("dedup", "--features", "{text}", checks="features text file"),
    R("dedup", "--features", "{jpg}", checks="features jpeg"),
    R("dedup", "--features", "{empty_dir}", checks="features empty folder"),
    R("dedup", "--features", "{unicode}", checks="features unicode missing"),
    R("dedup", "--images", "{missing}", "--out", "{new}", *TINY, checks="images missing"),
    R("dedup", "--images", "{jpg}", "--out", "{new}", *TINY, checks="images is a file"),
    R("dedup", "--images", "{empty_dir}", "--out", "{new}", *TINY, checks="images empty folder"),
    R("dedup", "--features", "{root}", "--against", "{missing}", checks="against missing"),
    R("dedup", "--features", "{root}", "--against", "{jpg}", checks="against jpeg"),
    R("dedup", "--features", "{root}", "--reference", "{missing}", checks="reference missing"),
    R("dedup", "--features", "{root}", "--reference", "{text}", checks="reference text file"),
    R("dedup", "--features", "{root}", "--reference", "{npy}", checks="reference npy"),
    R("dedup", "--features", "{root}", "--out", "{text}", checks="out is a file"),
    R("dedup", "--features", "{root}", "--out", "{ro}/dedup", checks="out read-only"),
    R("apply", "--out", "{missing}", checks="out missing"),
    R("apply", "--out", "{text}", checks="out is a file", says="is a file"),
    R("apply", "--out", "{empty_dir}", checks="out empty folder"),
    R("apply", "--out", "{plain}", checks="out without dedup"),
    R("apply", "--out", "{quote}", checks="out quote missing"),
    R("apply", "--out", "{root}", "--move-to", "{text}", checks="move-to is a file", says="is a file"),
    R("apply", "--out", "{root}", "--link-keepers", "{text}", checks="link-keepers is a file", says="is a file"),
    R("apply", "--undo", "{missing}", checks="undo missing"),
    R("apply", "--undo", "{text}", checks="undo text file"),
    R("apply", "--undo", "{jpg}", checks="undo jpeg"),
    R("apply", "--undo", "{empty_dir}", checks="undo folder", says="is a folder"),
    R("apply", "--undo", "{empty_file}", checks="undo empty file"),
    R("curate", "--pool", "{missing}", "--balanced", "2", checks="pool missing"),
    R("curate", "--pool", "{jpg}", "--balanced", "2", checks="pool jpeg"),
    R("curate", "--pool", "{text}", "--balanced", "2", checks="pool text file"),
    R("curate", "--pool", "{empty_dir}", "--balanced", "2", checks="pool empty folder"),
    R("curate", "--pool", "{root}", "--queries", "seed={missing}", checks="queries missing"),
    R("curate", "--pool", "{root}", "--queries", "seed={jpg}", checks="queries jpeg"),
    R("curate", "--pool", "{root}", "--queries", "seed={empty_dir}", checks="queries empty folder"),
    R("curate", "--pool", "{root}", "--balanced", "2", "--out", "{text}", checks="out is a file"),
    R("curate", "--pool", "{root}", "--balanced", "2", "--out", "{ro}/curate", checks="out read-only"),
    R("export", "--selection", "{missing}", "--out", "{new}", checks="selection missing"),
    R("export", "--selection", "{npy}", "--out", "{new}", checks="selection npy"),
    R("export", "--selection", "{empty_dir}", "--out", "{new}", checks="selection empty folder"),
    R("export", "--selection", "{npy}", "--features", "{root}", "--out", "{new}", checks="selection npy, features"),
    R("export", "--selection", "{text}", "--features", "{root}", "--out", "{new}", checks="selection text file"),
    R("export", "--selection", "{jpg}", "--features", "{root}", "--out", "{new}", checks="selection jpeg"),
    R("export", "--selection", "{empty_file}", "--features", "{root}", "--out", "{new}",
      checks="selection empty file"),
    R("export", "--selection", "{selection}", "--out", "{new}", "--features", "{missing}", checks="features missing"),
    R("export", "--selection", "{selection}", "--out", "{new}", "--features", "{jpg}", checks="features jpeg"),
    R("export", "--selection", "{selection}", "--out", "{text}", checks="out is a file"),
    R("export", "--selection", "{selection}", "--out", "{ro}/export", checks="out read-only"),
    R("export-npy", "--features", "{missing}", "--out", "{new}", checks="features missing"),
    R("export-npy", "--features", "{jpg}", "--out", "{new}", checks="features jpeg"),
    R("export-npy", "--features", "{empty_dir}", "--out", "{new}", checks="features empty folder"),
    R("export-npy", "--features", "{root}", "--out", "{text}", checks="out is a file"),
    R("export-npy", "--features", "{root}", "--out", "{ro}/npy", checks="out read-only"),
    R("evaluate", "--features", "{missing}", checks="features missing"),
    R("evaluate", "--features", "{jpg}", checks="features jpeg"),
    R("evaluate", "--features", "{empty_dir}", checks="features empty folder"),
    R("evaluate", "--compare", "{root}", "{missing}", checks="compare missing"),
    R("evaluate", "--features", "{root}", "--labels", "{missing}", checks="labels missing"),
    R("evaluate", "--features", "{root}", "--labels", "{photos}", checks="labels folder", says="is a folder"),
    R("evaluate", "--features", "{root}", "--labels", "{jpg}", checks="labels jpeg", says="is not a readable"),
    R("evaluate", "--features", "{root}", "--labels", "{npy}", checks="labels npy", says="is not a readable"),
    R("evaluate", "--features", "{root}", "--labels", "{empty_file}", checks="labels empty file",
      says="is not a readable"),
    R("evaluate", "--features", "{root}", "--labels", "{labels}", "--no-linear", "--out", "{text}",
      checks="out is a file"),
    R("evaluate", "--features", "{root}", "--labels", "{labels}", "--no-linear", "--out", "{ro}/eval",
      checks="out read-only"),
    R("report", "--out", "{missing}", checks="out missing"),
    R("report", "--out", "{jpg}", checks="out jpeg"),
    R("report", "--out", "{root}", "--report", "{text}", checks="report is a file"),
    R("report", "--out", "{root}", "--report", "{ro}/report", checks="report read-only"),
    R("report", "--out", "{root}", "--search", "{missing}", checks="search missing", says="does not exist"),
    R("report", "--out", "{root}", "--search", "{jpg}", checks="search jpeg", says="is not a readable"),
    R("pca", "--images", "{missing}", "--out", "{new}", *TINY, checks="images missing"),
    R("pca", "--images", "{jpg}", "--out", "{new}", *TINY, checks="images is a file"),
    R("pca", "--images", "{empty_dir}", "--out", "{new}", *TINY, checks="images empty folder"),
    R("pca", "--images", "{photos}", "--out", "{text}", *TINY, checks="out is a file", says="is a file"),
    R("pca", "--images", "{photos}", "--out", "{ro}/pca", *TINY, checks="out read-only"),
    R("pca", "--images", "{photos}", "--out", "{new}", "--weights", "{text}", checks="weights text"),
    R("serve", "--index", "{missing}", checks="index missing"),
    R("serve", "--index", "{jpg}", checks="index jpeg"),
    R("serve", "--index", "{empty_dir}", checks="index empty folder"),
    R("serve", "--index", "{root}", "--root", "{missing}", checks="root missing", says="does not exist"),
    R("serve", "--index", "{root}", "--root", "{jpg}", checks="root jpeg", says="is not a folder"),
    R("serve", "--index", "{root}", "--weights", "{missing}", checks="weights missing", says="does not exist"),
    R("bench", "--photos", "{missing}", "--out", "{new}", *TINY, checks="photos missing"),
    R("bench", "--photos", "{jpg}", "--out", "{new}", *TINY, checks="photos is a file"),
    R("bench", "--photos", "{empty_dir}", "--out", "{new}", *TINY, checks="photos empty folder"),
    R("bench", "--photos", "{photos}", "--out", "{text}", *TINY, checks="out is a file", says="is a file"),
    R("parity", "--photos", "{missing}", "--out", "{new}", *TINY, checks="photos missing"),
    R("parity", "--photos", "{jpg}", "--out", "{new}", *TINY, checks="photos is a file"),
    R("parity", "--photos", "{empty_dir}", "--out", "{new}", *TINY, checks="photos empty folder"),
    R("parity", "--photos", "{photos}", "--out", "{text}", *TINY, checks="out is a file", says="is a file"),
    R("demo", "--out", "{text}", "--weights", "random", checks="out is a file"),
    R("demo", "--out", "{text}/below", "--weights", "random", checks="out below a file"),
    R("demo", "--out", "{new}", "--weights", "{missing}", checks="weights missing"),
]


# ------------------------------------------------------------------------------------------------ inputs
def make_paths(base: Path) -> dict[str, Path]:
    """Every path a row names, made once: bad ones, and good ones to pair a bad option with."""
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup
    from pipeline.extract.runner import run_extract
    from pipeline.index.build import IndexConfig, build_index

    p = {"missing": base / "nope", "quote": base / "bob's photos", "space": base / "two words",
         "dollar": base / "$HOME x", "unicode": base / "fotos-ünïcødé ✓", "new": base / "new-{n}",
         "text": base / "notes.txt", "jpg": base / "photo.jpg", "npy": base / "emb.npy",
         "empty_dir": base / "empty", "empty_file": base / "empty.parquet", "photos": base / "photos",
         "root": base / "root", "ro": base / "read-only", "base": base}
    p["text"].write_text("these are my notes\nnot a shard list\n")
    make_image(0).save(p["jpg"])
    np.save(p["npy"], np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32))
    p["empty_dir"].mkdir()
    p["empty_file"].write_bytes(b"")
    p["photos"].mkdir()
    for i in range(4):
        make_image(i).save(p["photos"] / f"p{i}.jpg")
    run_extract(tiny_config(p["root"], images=str(p["photos"])))
    build_index(IndexConfig(features=str(p["root"]), progress=False))
    p["plain"] = base / "root without dedup"
    shutil.copytree(p["root"], p["plain"])
    p["labels"] = base / "labels.csv"
    p["labels"].write_text("key,label,split\n" + "".join(f"p{i}.jpg,{'ab'[i % 2]},{('train', 'val')[i // 2]}\n"
                                                         for i in range(4)))
    run_dedup(DedupConfig(features=str(p["root"]), progress=False))
    p["selection"] = p["root"] / "dedup" / "groups.parquet"
    p["ro"].mkdir()
    p["ro"].chmod(0o555)
    return p


def argv_of(row: Row, paths: dict[str, Path], n: int) -> list[str]:
    names = {k: str(v).replace("{n}", str(n)) for k, v in paths.items()}
    return [row.command, *(a.format(**names) for a in row.argv)]


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    code: object  # the exit status, or None when an exception escaped
    stderr: str  # what the user would see there: printed lines and WARNING+ log lines
    escaped: str = ""  # the traceback of an exception that escaped cli.main
    seconds: float = 0.0


class Served(Exception):
    """A `serve` row got past every check: the server would have started (and run until stopped)."""


@contextlib.contextmanager
def never_serving(argv: list[str]):
    if argv[0] != "serve":
        yield
        return
    import uvicorn

    def refuse(self, *args, **kwargs):
        raise Served("the server would have started")

    run, uvicorn.Server.run = uvicorn.Server.run, refuse
    try:
        yield
    finally:
        uvicorn.Server.run = run


def run_row(argv: list[str]) -> Outcome:
    """`dinocurate argv` in this process, as a user runs it, with stderr and the log lines a user would see
    collected. The root logger gets one handler, as run_job's basicConfig would add (which it then leaves
    alone), writing `LEVEL name: message` lines to the collected stderr."""
    import traceback

    err, root = io.StringIO(), logging.getLogger()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handlers, level = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    start = time.perf_counter()
    outcome = Outcome(code=None, stderr="")
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), never_serving(argv):
            cli.main(argv)
    except SystemExit as exc:
        outcome.code = exc.code
    except Exception:  # noqa: BLE001 - the point: what escapes is a traceback the user would see
        outcome.escaped = traceback.format_exc()
    finally:
        root.handlers, root.level = handlers, level
        outcome.seconds = time.perf_counter() - start
    outcome.stderr = err.getvalue()
    return outcome


CHILD = """
import json, sys
from tests.jobs.test_bad_inputs import run_row
out = [vars(run_row(argv)) for argv in json.loads(sys.stdin.read())]
print(json.dumps(out))
"""


def run_rows_in_child(rows: list[list[str]]) -> list[Outcome]:
    """The read-only rows in one child process; as root, without CAP_DAC_OVERRIDE, so that permission bits
    hold for it as for any user."""
    command = [sys.executable, "-c", CHILD]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root writes through permission bits and setpriv is absent")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    proc = subprocess.run(command, input=json.dumps(rows), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [Outcome(**o) for o in json.loads(proc.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    return make_paths(tmp_path_factory.mktemp("bad inputs"))


@pytest.fixture(scope="module")
def read_only_outcomes(paths) -> dict[str, Outcome]:
    rows = [r for r in ROWS if r.read_only]
    argvs = [argv_of(r, paths, n) for n, r in enumerate(ROWS) if r.read_only]
    return {r.command + " " + r.checks: o for r, o in zip(rows, run_rows_in_child(argvs), strict=True)}


PROGRESS_BAR = re.compile(r"\d+%\|.*\| \d+/")  # tqdm's, as it writes to a file that is not a terminal


def shown_lines(stderr: str) -> list[str]:
    """stderr as a user reads it for mistakes: without INFO log lines, progress bars, argparse's usage block
    (it comes with argparse's own one-line error) and the warning that features come from random weights
    (true of the tiny model every row uses)."""
    lines = [line for line in stderr.splitlines()
             if line.strip() and not PROGRESS_BAR.search(line) and not line.startswith(("INFO ", "DEBUG "))
             and not (line.startswith("WARNING ") and "random weights" in line.lower())]
    if lines and lines[0].startswith("usage: "):
        lines = [line for line in lines[1:] if not line.startswith(" ")]
    return lines


LONGEST = 300  # characters of an error line, with the fixture folder written as 4: one line a person reads


@pytest.mark.parametrize("row", [pytest.param(r, id=f"{r.command}: {r.checks}", marks=r.marks) for r in ROWS])
def test_a_bad_input_is_one_line_and_exit_2(row, paths, request):
    n = ROWS.index(row)
    if row.read_only:
        outcome = request.getfixturevalue("read_only_outcomes")[row.command + " " + row.checks]
    else:
        outcome = run_row(argv_of(row, paths, n))
    said = f"dinocurate {' '.join(argv_of(row, paths, n))}\n{outcome.escaped or outcome.stderr}"
    assert "Traceback" not in outcome.escaped + outcome.stderr, said
    assert outcome.code == 2, said
    lines = shown_lines(outcome.stderr)
    assert len(lines) == 1, said
    assert lines[0].startswith(("error: ", f"dinocurate {row.command}: error: ")), said
    assert len(lines[0].replace(str(paths["base"]), "BASE")) <= LONGEST, said
    if row.says:
        assert row.says.format(**{k: str(v) for k, v in paths.items()}) in lines[0], said
    if row.not_says:
        assert row.not_says not in lines[0], said


def test_the_table_covers_every_subcommand():
    assert {r.command for r in ROWS} == set(cli.COMMANDS)
    assert len({(r.command, r.checks) for r in ROWS}) == len(ROWS)  # ids say which row failed
