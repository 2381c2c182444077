"""The command line as a user meets it: `dinocurate <command>` and `python -m jobs.<command>` alike.

Most checks run in this process (a job's parser, a library call replaced by a stub); a few subprocesses check
what only a real process shows: the installed script, a traceback, help as printed.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from jobs import cli
from jobs._args import config_from, default
from jobs._cli import build_parser, summary
from tests.conftest import make_image

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "100", **(env or {})})


def job(name: str):
    return importlib.import_module(cli.module_of(name))


def main_exit(argv: list[str]) -> int:
    """`dinocurate argv` in this process; its exit code."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return exit_.value.code


# ------------------------------------------------------------------------------------------------ help
def test_dinocurate_help_lists_every_command_with_its_summary(capsys):
    assert main_exit(["--help"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert set(cli.COMMANDS) == {"extract", "pack", "index", "search", "knn", "dedup", "apply", "curate", "export",
                                 "export-npy", "evaluate", "report", "pca", "serve", "bench", "parity", "demo"}
    for name in cli.COMMANDS:
        at = next((i for i, r in enumerate(rows) if r.split()[:1] == [name]), None)
        # argparse moves the summary to the next line when the name is long (export-npy)
        row = "" if at is None else rows[at] + (" " + rows[at + 1].strip() if rows[at].strip() == name else "")
        assert " ".join(summary(job(name)).split()[:3]) in row, f"{name} has no one-line summary: {row!r}"


def normalised(help_text: str, prog: str) -> str:
    """Help text with the program name taken out, commands written as `dinocurate` shows them, and whitespace
    collapsed (usage wraps after the prog; help texts wrap where the commands stand)."""
    text = help_text.replace(f"usage: {prog} ", "usage: PROG ", 1)
    return " ".join(re.sub(r"python -m jobs\.(\w+)", lambda m: f"dinocurate {m[1].replace('_', '-')}", text).split())


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_each_command_has_the_same_help_as_its_job_module(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main_exit([name, "--help"]) == 0
    via_cli = capsys.readouterr().out
    with pytest.raises(SystemExit):
        job(name).main(["--help"])
    via_module = capsys.readouterr().out
    assert normalised(via_cli, f"dinocurate {name}") == normalised(via_module, f"python -m {cli.module_of(name)}")
    assert "(default: None)" not in via_module  # an unset default says what happens instead


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_help_shows_the_command_as_it_was_invoked(name, capsys, monkeypatch):
    """Issue 26, item 19: `dinocurate X --help` said `python -m jobs.X` in its description and examples."""
    monkeypatch.setenv("COLUMNS", "100")
    assert main_exit([name, "--help"]) == 0
    via_cli = capsys.readouterr().out
    assert "python -m jobs." not in via_cli
    assert f"`dinocurate {name}`: " in via_cli and f"\n  dinocurate {name}" in via_cli  # description, an example
    with pytest.raises(SystemExit):
        job(name).main(["--help"])
    via_module = capsys.readouterr().out
    assert f"`python -m {cli.module_of(name)}`: " in via_module and "dinocurate " not in via_module


def test_installed_script_and_python_m_print_the_same_extract_help():
    scripts = [e for e in entry_points(group="console_scripts") if e.name == "dinocurate"]
    assert [e.value for e in scripts] == ["jobs.cli:main"]  # pyproject's [project.scripts], installed by pip -e .
    script = Path(sys.executable).parent / "dinocurate"
    assert script.is_file(), "run .venv/bin/pip install -e . to install the dinocurate script"
    listing = subprocess.run([str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and all(name in listing.stdout for name in cli.COMMANDS)
    env = {**os.environ, "COLUMNS": "100"}
    a = subprocess.run([str(script), "extract", "--help"], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=120)
    b = run("-m", "jobs.extract", "--help")
    assert a.returncode == b.returncode == 0
    assert normalised(a.stdout, "dinocurate extract") == normalised(b.stdout, "python -m jobs.extract")


def test_extract_help_lists_every_option_with_examples(capsys):
    with pytest.raises(SystemExit):
        job("extract").main(["--help"])
    text = capsys.readouterr().out
    for option in ["--shards", "--images", "--weights", "--resolution", "--resize-mode", "--device", "--precision",
                   "--extras", "--dtype", "--workers", "--rank", "--world-size", "--max-pixels", "--model-kwargs",
                   "--executor", "--ray-actors", "--batch-size", "--no-progress", "--log-level"]:
        assert option in text, option
    assert "examples:" in text and "torchrun" in text
    assert "(default: 32)" in text and "(default: float16)" in text  # ExtractConfig's, filled in by argparse


# ------------------------------------------------------------------------- options and config defaults
def configs() -> dict[str, tuple[type, ...]]:
    from pipeline.apply.config import ApplyConfig
    from pipeline.bench.parity import ParityConfig
    from pipeline.bench.run import BenchConfig
    from pipeline.curate.export import ExportConfig
    from pipeline.curate.npy_export import ExportNpyConfig
    from pipeline.curate.retrieval import CurateConfig
    from pipeline.dedup.config import DedupConfig
    from pipeline.evaluate.run import EvalConfig
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.demo import DemoConfig
    from pipeline.extract.pack import PackConfig
    from pipeline.index.build import IndexConfig
    from pipeline.index.knn import KnnConfig
    from pipeline.index.search import SearchConfig
    from pipeline.report.pca import PcaConfig
    from pipeline.report.run import ReportConfig
    from pipeline.serve.config import ServeConfig

    return {"extract": (ExtractConfig,), "pack": (PackConfig,), "index": (IndexConfig,), "search": (SearchConfig,),
            "knn": (KnnConfig,), "dedup": (DedupConfig, ExtractConfig), "apply": (ApplyConfig,),
            "curate": (CurateConfig,),
            "export": (ExportConfig,), "export-npy": (ExportNpyConfig,), "serve": (ServeConfig,),
            "evaluate": (EvalConfig,), "report": (ReportConfig,), "pca": (PcaConfig,),
            "bench": (BenchConfig,), "parity": (ParityConfig,), "demo": (DemoConfig,)}


# The inputs each command needs, and the options that are the job's own (not a config field).
REQUIRED = {"extract": ["--out", "o"], "pack": ["--images", "d", "--out", "o"], "index": ["--features", "f"],
            "search": ["--index", "i", "--query", "q"], "knn": ["--features", "f"], "dedup": ["--features", "f"],
            "apply": ["--out", "o"], "curate": ["--pool", "p"], "export": ["--selection", "s", "--out", "o"],
            "evaluate": ["--features", "f"],
            "export-npy": ["--features", "f", "--out", "o"], "serve": ["--index", "i"],
            "report": ["--out", "o"], "pca": ["--images", "d", "--out", "o"], "bench": [], "parity": [], "demo": []}
JOB_OPTIONS = {"log_level", "executor", "actors", "cpus_per_actor", "max_retries", "rank", "world_size", "shards",
               "compare", "root", "offline",  # offline: sets HF_HUB_OFFLINE for the job (jobs/_cli.run_job)
               "record",  # bench --record FILE: the job appends the run's row to a benchmark record
               "plan"}  # --plan: the job prints what it would choose and need, and does nothing
# The options every command must keep (what the Makefile, the README and users pass).
KEY_OPTIONS = {
    "extract": ["--shards", "--images", "--out", "--model", "--weights", "--resolution", "--batch-size", "--executor"],
    "pack": ["--images", "--out", "--shard-size", "--prefix"],
    "index": ["--features", "--out", "--feature", "--factory", "--memory-budget", "--parts", "--executor", "--plan"],
    "search": ["--index", "--query", "--k", "--out", "--html"],
    "knn": ["--features", "--index", "--k", "--nprobe", "--workers", "--executor", "--plan"],
    "dedup": ["--features", "--images", "--out", "--threshold", "--reference", "--force", "--weights", "--device",
              "--plan"],
    "apply": ["--out", "--move-to", "--link-keepers", "--yes", "--undo", "--no-progress"],
    "curate": ["--pool", "--queries", "--mode", "--k", "--clusters", "--balanced", "--levels", "--plan"],
    "export": ["--selection", "--out", "--shard-size"],
    "export-npy": ["--features", "--out", "--feature", "--dtype", "--keys"],
    "serve": ["--index", "--port", "--host", "--reviewer", "--max-upload-mb", "--max-pixels"],
    "evaluate": ["--features", "--compare", "--labels", "--feature", "--k", "--val-fraction", "--no-linear"],
    "report": ["--out", "--search", "--groups-per-page"],
    "pca": ["--images", "--out", "--weights", "--resolution", "--colours", "--max-images"],
    "bench": ["--out", "--warmup", "--repeats", "--batch-sizes", "--no-fast-paths", "--no-compile"],
    "parity": ["--out", "--compile", "--images", "--model-kwargs"],
    "demo": ["--out", "--weights", "--resolution"],
}


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_options_are_config_fields_with_the_config_defaults(name, monkeypatch):
    for var in ("LOG_LEVEL", "EXECUTOR", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    parser = build_parser(job(name))
    text = parser.format_help()
    for option in KEY_OPTIONS[name]:
        assert re.search(rf"{option}\b", text), f"{name} lost {option}"
    args = parser.parse_args(REQUIRED[name])
    given = {a.lstrip("-").replace("-", "_") for a in REQUIRED[name][::2]}
    checked = 0
    for dest, value in vars(args).items():
        owners = [cls for cls in configs()[name] if any(f.name == dest for f in cls.__dataclass_fields__.values())]
        assert owners or dest in JOB_OPTIONS, f"{name}: option {dest} sets no config field"
        for cls in owners:
            try:
                expected = default(cls, dest)
            except TypeError:  # a required field: the command's input
                continue
            if dest not in given:
                assert value == expected, f"{name} --{dest}: parser default {value!r} != {cls.__name__} {expected!r}"
                checked += 1
    assert checked >= 2


def fake(monkeypatch, target: str):
    """Replace the library call `module.function` by one that raises Called(arguments)."""
    module, _, function = target.rpartition(".")

    def called(*args, **kwargs):
        raise Called(args, kwargs)

    monkeypatch.setattr(importlib.import_module(module), function, called)


class Called(Exception):
    """What a stubbed library call received (a non-user exception: it must leave the job unchanged)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__(args, kwargs)
        self.call_args, self.call_kwargs = args, kwargs


def default_configs():
    """command → (argv with the inputs only, the library call it makes, the config it must pass)."""
    from pipeline.apply.config import ApplyConfig
    from pipeline.bench.parity import ParityConfig
    from pipeline.bench.run import BenchConfig
    from pipeline.curate.export import ExportConfig
    from pipeline.curate.npy_export import ExportNpyConfig
    from pipeline.curate.retrieval import CurateConfig
    from pipeline.dedup.config import DedupConfig
    from pipeline.evaluate.run import EvalConfig
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.demo import DemoConfig
    from pipeline.extract.pack import PackConfig
    from pipeline.index.build import IndexConfig
    from pipeline.index.knn import KnnConfig
    from pipeline.index.search import SearchConfig
    from pipeline.report.pca import PcaConfig
    from pipeline.report.run import ReportConfig
    from pipeline.serve.config import ServeConfig

    return {
        "extract": (["--images", "d", "--out", "o"], "pipeline.extract.runner.run_extract",
                    (ExtractConfig(out="o", images="d"),)),
        "pack": (["--images", "d", "--out", "o"], "pipeline.extract.pack.run_pack", (PackConfig(images="d", out="o"),)),
        "index": (["--features", "f"], "pipeline.index.build.run_index", (IndexConfig(features="f"),)),
        "search": (["--index", "i", "--query", "q"], "pipeline.index.search.run_search",
                   ("i", "q", default(SearchConfig, "k"))),
        "knn": (["--features", "f"], "pipeline.index.knn.run_knn", (KnnConfig(features="f"),)),
        "dedup": (["--features", "f"], "pipeline.dedup.run.run_dedup", (DedupConfig(features="f"),)),
        "apply": (["--out", "o"], "pipeline.apply.run.run_apply", (ApplyConfig(out="o"),)),
        "curate": (["--pool", "p", "--balanced", "10"], "pipeline.curate.retrieval.run_curate",
                   (CurateConfig(pool="p", balanced=10),)),
        "export": (["--selection", "s", "--out", "o"], "pipeline.curate.export.run_export",
                   (ExportConfig(selection="s", out="o"),)),
        "evaluate": (["--features", "f"], "pipeline.evaluate.run.run_evaluate", (EvalConfig(features=("f",)),)),
        "export-npy": (["--features", "f", "--out", "o"], "pipeline.curate.npy_export.run_export_npy",
                       (ExportNpyConfig(features="f", out="o"),)),
        "serve": (["--index", "i"], "pipeline.serve.run.serve", (ServeConfig(index="i"),)),
        "report": (["--out", "o"], "pipeline.report.run.run_report", (ReportConfig(out="o"),)),
        "pca": (["--images", "d", "--out", "o"], "pipeline.report.pca.run_pca", (PcaConfig(images="d", out="o"),)),
        "bench": ([], "pipeline.bench.run.run_bench", (BenchConfig(),)),
        "parity": ([], "pipeline.bench.parity.run_parity_check", (ParityConfig(),)),
        "demo": ([], "pipeline.extract.demo.run_demo", (DemoConfig(),)),
    }


@pytest.mark.parametrize("entry", ["dinocurate", "python -m"])
@pytest.mark.parametrize("name", cli.COMMANDS)
def test_inputs_alone_give_the_config_dataclass_defaults(name, entry, monkeypatch):
    """The parser adds nothing of its own: argv with only the inputs reaches the library as the dataclass
    with its defaults. The stub raises a non-user exception, which must come out of the job unchanged."""
    for var in ("LOG_LEVEL", "EXECUTOR", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    argv, target, expected = default_configs()[name]
    fake(monkeypatch, target)
    with pytest.raises(Called) as call:
        cli.main([name, *argv]) if entry == "dinocurate" else job(name).main(argv)
    assert call.value.call_args == expected and not call.value.call_kwargs


def test_dedup_images_reaches_dedup_images_with_both_configs(monkeypatch):
    from pipeline.dedup.config import DedupConfig
    from pipeline.extract.config import ExtractConfig

    fake(monkeypatch, "pipeline.dedup.run.dedup_images")
    with pytest.raises(Called) as call:
        cli.main(["dedup", "--images", "d", "--out", "o", "--weights", "random", "--threshold", "0.7"])
    assert call.value.call_args == (ExtractConfig(out="o", images="d", weights="random"),
                                DedupConfig(features="o", threshold=0.7))


# ------------------------------------------------------------------------------------- exit codes
def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert main_exit(["pack", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--shard-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: shard_size must be >= 1, got 0"]
    assert main_exit(["extract", "--out", str(tmp_path / "out"), "--weights", "random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: give exactly one input")


def test_knn_over_an_index_of_other_features_is_a_user_error(tmp_path, capsys):
    """jobs/knn.py used to raise a bare ValueError (a traceback) for this user mistake."""
    import numpy as np

    from pipeline.index.build import IndexConfig, run_index
    from tests.conftest import write_feature_root

    rng = np.random.default_rng(0)
    write_feature_root(tmp_path / "a", rng.normal(size=(20, 8)).astype(np.float32))
    write_feature_root(tmp_path / "b", rng.normal(size=(20, 8)).astype(np.float32),
                       provenance={"model": "other", "weights": {"source": "file", "sha256": "cd" * 32, "path": None},
                                   "input_size": [3, 56, 56], "resize_mode": "fixed"})
    run_index(IndexConfig(features=str(tmp_path / "a"), progress=False))
    capsys.readouterr()
    code = main_exit(["knn", "--features", str(tmp_path / "b"), "--index", str(tmp_path / "a" / "index"),
                      "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.parametrize("argv, message", [
    (["extract"], "the following arguments are required: --out"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["extract", "--out", "o", "--images", "d", "--model-kwargs", "depth"], "model kwarg 'depth' is not name=value"),
    (["dedup", "--features", "f", "--images", "d"], "not allowed with argument"),
    (["index", "--features", "f", "--executor", "slurm"], "invalid choice: 'slurm'"),
])
def test_argparse_errors_exit_2_with_the_reason(argv, message, capsys):
    assert main_exit(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_and_does_not_exit_2(tmp_path):
    code = ("import pipeline.extract.pack as pack\n"
            "def broken(cfg):\n    raise RuntimeError('a bug in the library')\n"
            "pack.run_pack = broken\n"
            "from jobs.cli import main\n"
            f"main(['pack', '--images', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}])\n")
    proc = run("-c", code)
    assert proc.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in proc.stderr and "RuntimeError: a bug in the library" in proc.stderr
    assert "error: a bug" not in proc.stderr


def test_pack_writes_shards_and_list(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    for i in range(5):
        make_image(i).save(tmp_path / "img" / f"{i}.png")
    assert main_exit(["pack", "--images", str(tmp_path / "img"), "--out", str(tmp_path / "sh"), "--shard-size", "2",
                      "--no-progress"]) == 0
    assert (tmp_path / "sh" / "shards.txt").read_text().split() == [f"shard-00000{i}.tar" for i in range(3)]
    assert "pack: 3 shards" in capsys.readouterr().out


def test_missing_hub_weights_is_one_clear_line_and_exit_2(tmp_path):
    make_image(0).save(tmp_path / "a.jpg")
    proc = run("-m", "jobs.extract", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress",
               env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "empty")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no weights for")
    assert "--weights PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "features").exists()


# ------------------------------------------------------------------------- the Makefile and README
def command_lines() -> list[tuple[str, list[str]]]:
    """(job, its arguments) of every `make ...` and `... -m jobs.<job> ...` line of the README's sh blocks; make
    lines are expanded by `make -n` (a dry run: nothing is executed)."""
    out, in_sh = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_sh = line == "```sh"
            continue
        line = line.split(" #")[0].strip()
        if not in_sh or not line:
            continue
        if line.startswith("make "):
            dry = subprocess.run(["make", "-n", "-s", *shlex.split(line)[1:]], cwd=REPO, capture_output=True,
                                 text=True, timeout=60)
            line = next((x for x in dry.stdout.splitlines() if " -m jobs." in x), "")
        if " -m jobs." in line and "--help" not in line:
            words = shlex.split(line)
            at = words.index("-m")
            out.append((words[at + 1].removeprefix("jobs."), words[at + 2:]))
    return out


def test_the_readme_names_every_command():
    """Issue 26, item 19: the README's list of `dinocurate` commands left out serve, export-npy, apply and demo."""
    text = " ".join((REPO / "README.md").read_text().split())
    listed = re.search(r"one command, `dinocurate COMMAND` for the commands ([a-z, -]+) and ([a-z-]+),", text)
    assert listed, "the README lost its list of dinocurate commands"
    assert [*listed[1].split(", "), listed[2]] == list(cli.COMMANDS)


def test_serve_says_which_progress_bar_no_progress_hides(capsys):
    """Issue 26, item 19: `serve --help` offered a bare `--no-progress` (no progress bar) on a server."""
    assert main_exit(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-progress no progress bar while the stored vectors are copied beside the index" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_every_readme_command_parses():
    lines = command_lines()
    assert len(lines) >= 20 and {name for name, _ in lines} >= {"extract", "pack", "index", "search", "knn", "dedup",
                                                                "curate", "export", "evaluate", "report", "pca",
                                                                "bench", "parity", "demo"}
    for name, argv in lines:
        parser = build_parser(job(name))
        args = parser.parse_args(argv)  # exits 2 on an unknown option or a missing input
        assert args.log_level, (name, argv)


def test_config_from_takes_the_fields_it_knows(tmp_path):
    import argparse

    from pipeline.extract.pack import PackConfig

    args = argparse.Namespace(images="d", out="o", shard_size=5, prefix="p", progress=False, log_level="INFO")
    assert config_from(PackConfig, args, prefix="q") == PackConfig(images="d", out="o", shard_size=5, prefix="q",
                                                                   progress=False)


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_example_in_the_help_parses(name):
    text = job(name).EPILOG
    examples = [line.split("  #")[0].strip() for line in text.splitlines()
                if line.strip().startswith(("python -m jobs.", "torchrun "))]
    assert examples
    for line in examples:
        words = shlex.split(line)
        at = words.index("-m")
        example_job = words[at + 1].removeprefix("jobs.")
        build_parser(job(example_job)).parse_args(words[at + 2:])
