"""README.md as a user's guide: short, no dated figures, the four paths, and every command in it parses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs import cli
from jobs._cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PATHS = ("Dedupe a photo folder", "Extract features of webdataset shards at scale",
         "Build an index and search or serve it", "Curate a pool")
# A figure tied to a day, a clock, a machine or "here" belongs on docs/PERFORMANCE.md, with its machine and command.
DATED = {
    "a date": r"\b20\d\d-\d\d-\d\d\b",
    "a clock time": r"(?<![\d.:])\d{1,2}:\d\d(?![\d:])",
    "a time of day": r"\bthis (afternoon|morning|evening)\b",
    "a measurement here": r"\b(measured|ran|runs|took|takes) here\b|\bon this machine\b",
    "a CPU model": r"\b(EPYC|Xeon|Ryzen|Threadripper|Sapphire Rapids|Graviton)\b",
}


def dated_figures(text: str) -> list[str]:
    return [f"{what}: {m[0]!r}" for what, pattern in DATED.items() for m in re.finditer(pattern, text, re.I)]


def sections() -> dict[str, str]:
    """`## heading` → its text up to the next `## `."""
    parts = re.split(r"^## (.+)$", README.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def commands(text: str) -> list[str]:
    """The commands of the ```sh blocks in `text`: comments cut, `a && b` as two commands."""
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            found += [part.strip() for part in line.split("&&") if part.strip()]
    return [c for c in found if re.match(r"(make|dinocurate|python -m jobs\.|torchrun .* -m jobs\.)", c)]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def job_argv(command: str) -> tuple[str, list[str]] | None:
    """(job module, its argv) that a README command runs; a `make` line through `make -n` (nothing runs)."""
    words = shlex.split(command)
    if words[0] == "make":
        assert words[1] in makefile_targets(), f"{command}: the Makefile has no target {words[1]!r}"
        dry = subprocess.run(["make", "-n", "-s", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, f"{command}: {dry.stdout}{dry.stderr}"
        line = next((x for x in dry.stdout.splitlines() if " -m jobs." in x), None)
        if line is None:  # test, lint, ...: no job behind it
            return None
        words = shlex.split(line)
    if words[0] == "dinocurate":
        return "dinocurate", words[1:]
    at = words.index("-m")
    return words[at + 1], words[at + 2:]


def parse(module: str, argv: list[str]) -> None:
    """Parse as the command would (an unknown option or a missing input exits 2); `--help` must exit 0."""
    if module == "dinocurate":
        named = next((a for a in argv if not a.startswith("-")), None)
        parser = cli.build_parser(with_options=[named] if named in cli.COMMANDS else [])
        assert named is None or named in cli.COMMANDS, f"dinocurate has no command {named!r}"
    else:
        parser = build_parser(__import__(module, fromlist=["run"]))
    if "--help" in argv or "-h" in argv:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0
        return
    args = parser.parse_args(argv)
    assert args.log_level


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 220


def test_readme_carries_no_dated_figure():
    assert dated_figures(README.read_text()) == []


@pytest.mark.parametrize("line", ["at 2.3 images/s (2026-12-02, loaded machine)", "make bench (17:53–18:30)",
                                  "the changes of this afternoon", "Measured here at 1,000,000 vectors",
                                  "on the AMD EPYC (2 cores)"])
def test_the_dated_figure_check_finds_what_the_old_readme_carried(line):
    assert dated_figures(line)


def test_the_dated_figure_check_lets_addresses_and_ranges_pass():
    assert dated_figures("http://127.0.0.1:8000/ HEAD_IP:6379 train-{000000..000099}.tar torch==2.14.1") == []


def test_readme_has_the_four_paths_each_with_commands_and_what_lands_on_disk():
    found = sections()
    for heading in PATHS:
        assert heading in found, f"README lost the path {heading!r}"
        assert len(commands(found[heading])) >= 3, heading
        assert "What lands on disk" in found[heading], heading
    assert list(found).index(PATHS[0]) > list(found).index("Install")


def test_the_dedupe_path_goes_extract_dedup_review_apply_and_undo():
    lines = commands(sections()["Dedupe a photo folder"])
    assert [shlex.split(c)[1] for c in lines] == ["dedup", "report", "index", "serve", "apply", "apply", "apply"]
    assert "ARGS='--yes'" in lines[5] and lines[6].startswith("make apply UNDO=")


def test_readme_commands_cover_every_stage_a_user_meets():
    jobs = {shlex.split(c)[1] for c in commands(README.read_text()) if c.startswith("make ")}
    assert jobs >= {"extract", "pack", "index", "search", "serve", "knn", "dedup", "apply", "curate", "export",
                    "export-npy", "evaluate", "report", "pca", "bench", "parity", "demo", "test", "lint"}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("command", commands(README.read_text()))
def test_every_readme_command_exists_and_its_options_parse(command):
    ran = job_argv(command)
    if ran is not None:
        parse(*ran)


def test_readme_links_point_at_files_in_the_repository():
    """Relative links resolve; the docs site's pages once it exists (mkdocs.yml), every other file now."""
    links = re.findall(r"\]\(([^)#\s]+)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert {"docs/FORMAT.md", "docs/install.md", "docs/PERFORMANCE.md", "docs/DESIGN.md", "LICENSE"} <= set(local)
    site = (REPO / "mkdocs.yml").exists()
    missing = [link for link in local if not (REPO / link).exists()
               and (site or not re.fullmatch(r"docs/[\w-]+\.md", link) or link == "docs/FORMAT.md")]
    assert missing == []


def test_license_is_the_apache_license_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert re.search(r'^license = "Apache-2.0"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "Copyright 2026 The dinocurate authors" in text
