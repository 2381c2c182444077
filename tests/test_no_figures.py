"""Docstrings and comments under pipeline/ carry the why, never a dated or machine-specific figure.

Figures live in benchmarks/results/*.json and the page made from them, docs/PERFORMANCE.md."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a measurement log leaves behind: a date, a clock time or window, a CPU model, "measured here".
FIGURE = re.compile(
    r"\b(?:19|20)\d\d-[01]\d-[0-3]\d\b"                       # 2026-12-02
    r"|(?<![\d.:])[0-2]?\d:[0-5]\d(?:\s*[–-]\s*[0-2]?\d:[0-5]\d)?(?![\d:])"  # 09:34, 15:04–15:36
    r"|\b(?:EPYC|Xeon|Ryzen|Threadripper|Graviton|Neoverse|Sapphire Rapids|Ice Lake|Cascade Lake|Skylake"
    r"|Apple M[1-9])\b"
    r"|\b(?:measured|timed|ran) (?:here|on this machine)\b|\bthis (?:morning|afternoon|evening)\b"
    r"|\b\d+ rounds? each\b|\bmedian (?:of )?\d|\d\.\d+ median\b",
    re.IGNORECASE,
)


def figures(text: str) -> list[str]:
    return [m.group(0) for m in FIGURE.finditer(text)]


def texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file."""
    source = path.read_text(encoding="utf-8")
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((node.body[0].lineno, doc))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    return out


def test_no_docstring_or_comment_under_pipeline_carries_a_dated_or_machine_figure():
    found = [f"{path.relative_to(ROOT)}:{line}: {hit!r}"
             for path in sorted((ROOT / "pipeline").rglob("*.py"))
             for line, text in texts(path) for hit in figures(text)]
    assert not found, "figures belong in benchmarks/results/*.json:\n" + "\n".join(found)


@pytest.mark.parametrize("text", [
    "measured on 2026-12-02 with 2 cores",
    "make bench three times (09:34–10:01)",
    "on the AMD EPYC, avx512_bf16",
    "an Intel Xeon with AMX",
    "Measured here: 29.5 s",
    "changes of this afternoon",
    "6 rounds each alternated",
    "0.920 median without the gate",
])
def test_the_check_finds_what_a_measurement_log_leaves(text):
    assert figures(text)


@pytest.mark.parametrize("text", [
    "c = Client('http://127.0.0.1:8000')",
    "CPUs with AMX-BF16 or AVX512-BF16 run bf16 natively",
    "blocks up to 32 MiB come from the heap",
    "the median of the rounds' ratios",
    "64-bit DCT perceptual hash: 8×8 low band vs its median",
])
def test_the_check_lets_the_why_through(text):
    assert not figures(text)
