"""The Makefile as the front door: any path passed through unchanged, ARGS=--help without the required variables,
and no stage writing into the repository's own folder by default (issue 12, item 16; issue 26, items 6, 21)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is absent")


def make(*args: str, dry: bool = True) -> subprocess.CompletedProcess:
    # -o: take the venv stamp as up to date (no install from a test)
    cmd = ["make", "-s", "-o", ".venv/.installed", *(["-n"] if dry else []), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target, variables, expect", [
    ("extract", ["IMAGES=my photos", "OUT=out dir/x"], "--images 'my photos' --out 'out dir/x'"),
    ("pack", ["IMAGES=my photos", "OUT=shards dir"], "--images 'my photos' --out 'shards dir'"),
    ("demo", ["OUT=demo dir"], "--out 'demo dir'"),
    ("pca", ["IMAGES=my photos", "OUT=pca dir"], "--images 'my photos' --out 'pca dir'"),
    ("export", ["SELECTION=sel.parquet", "OUT=export dir"], "--selection 'sel.parquet' --out 'export dir'"),
    ("dedup", ["IMAGES=my photos", "OUT=out dir"], "--images 'my photos' --out 'out dir'"),
    ("apply", ["OUT=out dir"], "--out 'out dir'"),
    ("apply", ["UNDO=out dir/apply/m.parquet"], "--undo 'out dir/apply/m.parquet'"),
])
def test_paths_with_spaces_are_quoted(target, variables, expect):
    proc = make(target, *variables)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout


@pytest.mark.parametrize("target", ["extract", "pack", "index", "search", "knn", "dedup", "apply", "curate",
                                    "export", "evaluate", "report", "pca"])
def test_args_help_needs_no_inputs(target):
    proc = make(target, "ARGS=--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"-m jobs.{target} --help")


@pytest.mark.parametrize("target, variables", [
    ("extract", ["SHARDS=x.tar"]), ("pack", ["IMAGES=photos"]), ("export", ["SELECTION=sel.parquet"]),
    ("dedup", ["IMAGES=photos"]),
])
def test_stages_that_create_an_output_need_out(target, variables):
    proc = make(target, *variables, dry=False)
    assert proc.returncode == 2
    assert "usage: make" in proc.stdout and "OUT=" in proc.stdout


def test_no_target_writes_into_the_repository_by_default():
    """Issue 26, item 21: `make demo` wrote demo_out/ and `make pca` pca_out/ into the repository. pca now needs
    OUT like every stage that creates an output; the demo goes to the job's default (a user cache folder)."""
    assert "--out" not in make("demo").stdout
    proc = make("pca", "IMAGES=p", dry=False)
    assert proc.returncode == 2 and "usage: make pca IMAGES=DIR OUT=" in proc.stdout


@pytest.mark.parametrize("target, variables, expect", [
    ("dedup", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir'"),
    ("index", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/index'"),
    ("knn", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/knn'"),
    ("curate", ["POOL=my pool", "OUT=alt dir"], "--pool 'my pool' --out 'alt dir/curate'"),
    ("evaluate", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/eval'"),
])
def test_out_with_features_is_passed_on_quoted(target, variables, expect):
    """Issue 25, bug 4: OUT given with FEATURES was dropped, and the stage rewrote the FEATURES root."""
    proc = make(target, *variables)
    assert proc.returncode == 0, proc.stderr
    assert expect in " ".join(proc.stdout.split())


@pytest.mark.parametrize("target", ["dedup", "index", "knn", "curate", "evaluate"])
def test_without_out_no_out_is_passed(target):
    proc = make(target, "FEATURES=f")
    assert proc.returncode == 0, proc.stderr
    assert "--out" not in proc.stdout


# Names a file system allows and a shell or make would otherwise act on: quotes, `$`, backquotes, a make
# reference, spaces, a newline, commas and parentheses, `#`, a backslash, non-ASCII.
ODD = ["bob's photos", 'say "cheese"', "$HOME $(id) $$x ${USER}", "`id`", "été/日本/фото", "two\nlines",
       "a,b (c) #d", "back\\slash", "-dash"]


def argv_reaching_python(tmp_path: Path, target: str, *variables: str) -> list[str] | str:
    """Run the target for real with PY replaced by a script that records its argv (what python would get)."""
    record, script = tmp_path / "argv.json", tmp_path / "argv.py"
    script.write_text(f"import json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    proc = make(target, f"PY={sys.executable} {script}", *variables, dry=False)
    if proc.returncode != 0:
        return proc.stderr + proc.stdout
    return json.loads(record.read_text())


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("target, variables, expect", [
    ("extract", {"IMAGES": "{}", "OUT": "o/{}", "EXECUTOR": "{}"},
     ["--images", "{}", "--out", "o/{}", "--executor", "{}"]),
    ("extract", {"SHARDS": "{}", "OUT": "o"}, ["--shards", "{}", "--out", "o"]),
    ("pack", {"IMAGES": "{}", "OUT": "{}"}, ["--images", "{}", "--out", "{}"]),
    ("index", {"FEATURES": "{}", "OUT": "{}"}, ["--features", "{}", "--out", "{}/index"]),
    ("search", {"INDEX": "{}", "QUERY": "{}", "K": "3"}, ["--index", "{}", "--query", "{}", "--k", "3"]),
    ("serve", {"INDEX": "{}"}, ["--index", "{}"]),
    ("knn", {"FEATURES": "{}", "OUT": "{}"}, ["--features", "{}", "--out", "{}/knn"]),
    ("dedup", {"FEATURES": "{}", "OUT": "{}"}, ["--features", "{}", "--out", "{}"]),
    ("dedup", {"IMAGES": "{}", "OUT": "{}"}, ["--images", "{}", "--out", "{}"]),
    ("apply", {"OUT": "{}"}, ["--out", "{}"]),
    ("apply", {"UNDO": "{}/m.parquet"}, ["--undo", "{}/m.parquet"]),
    ("curate", {"POOL": "{}", "QUERIES": "n={}", "OUT": "{}"},
     ["--pool", "{}", "--queries", "n={}", "--out", "{}/curate"]),
    ("curate", {"FEATURES": "{}.npy"}, ["--pool", "{}.npy"]),
    ("export", {"SELECTION": "{}", "OUT": "{}"}, ["--selection", "{}", "--out", "{}"]),
    ("export-npy", {"FEATURES": "{}", "OUT": "{}"}, ["--features", "{}", "--out", "{}"]),
    ("evaluate", {"FEATURES": "{}", "LABELS": "{}", "OUT": "{}"},
     ["--features", "{}", "--labels", "{}", "--out", "{}/eval"]),
    ("report", {"OUT": "{}", "SEARCH": "{}"}, ["--out", "{}", "--search", "{}"]),
    ("pca", {"IMAGES": "{}", "OUT": "{}"}, ["--images", "{}", "--out", "{}"]),
    ("demo", {"OUT": "{}"}, ["--out", "{}"]),
])
def test_any_path_reaches_python_unchanged(tmp_path, target, variables, expect, odd):
    """Issue 26, item 6: IMAGES="bob's photos" ended in `/bin/sh: Syntax error: Unterminated quoted string`."""
    given = [f"{name}={value.format(odd)}" for name, value in variables.items()]
    argv = argv_reaching_python(tmp_path, target, *given)
    assert isinstance(argv, list), argv
    assert argv[:2] == ["-m", f"jobs.{target.replace('-', '_')}"]
    assert argv[2:] == [word.format(odd) for word in expect]


def test_compare_paths_and_args_words(tmp_path):
    """COMPARE is one argument per space-separated path, each passed unchanged; ARGS stays a shell word list."""
    argv = argv_reaching_python(tmp_path, "evaluate", "COMPARE=bob's/a $x/b", "ARGS=--feature cls --k 'a b'")
    assert argv[2:] == ["--compare", "bob's/a", "$x/b", "--feature", "cls", "--k", "a b"]


@pytest.mark.parametrize("target, variable, said", [
    ("report", "OUT", "error: {} does not exist: give an extract output root (OUT)"),
    ("export", "SELECTION", "error: selection {} does not exist: give an output root's dedup/groups.parquet or "
                            "curate/selected.parquet"),
])
def test_a_missing_input_is_named_by_the_job_not_a_usage_line(tmp_path, target, variable, said):
    """Issue 26, item 15: `make report OUT=/nonexistent` printed only the usage line; `make export
    SELECTION=/nonexistent.parquet` said "cannot tell which extract output ... belongs to"."""
    missing = tmp_path / "nope's dir" / "x.parquet"
    proc = make(target, f"OUT={missing}", f"{variable}={missing}", dry=False)
    assert proc.returncode == 2 and "usage:" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [said.format(missing)] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("odd", ["bob's wheels", "$HOME $(id)", "été/日本"])
def test_device_check_passes_out_wheels_and_args(tmp_path, odd):
    """Issue 28, item 2: `make device-check` runs benchmarks/device_check.py (python3 where there is no .venv)."""
    argv = argv_reaching_python(tmp_path, "device-check", f"OUT=o/{odd}", f"WHEELS={odd}", "ARGS=--cpu")
    assert isinstance(argv, list), argv
    assert argv == ["benchmarks/device_check.py", "--out", f"o/{odd}", "--wheels", odd, "--cpu"]


def test_device_check_has_a_help_line():
    assert "make device-check" in make("help", dry=False).stdout
