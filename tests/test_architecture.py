"""Static checks over pipeline/ and jobs/ (ast, nothing imported) that keep the one-house layout from decaying."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline"
JOBS = REPO / "jobs"

# Data flows left to right: a stage may import itself and the stages before it, never one after it.
# io: formats only (below the contract modules); roots: what an output root holds, read through layout
STAGES = ("io", "roots", "extract", "index", "dedup", "curate")
# after curate; nothing imports them, they do not import each other
LEAVES = ("evaluate", "report", "bench", "serve", "apply")
CORE = ("errors", "provenance", "layout", "tasks")  # the contract: imported by all, importing only pipeline.io
FACADES = ("api",)  # one call per stage for notebooks: imports any stage, imported by no pipeline module
RECORD_NAMES = ("config.json", "index.json", "graph.json", "summary.json", "stats.json")
MAX_LINES = 400
FORMAT = REPO / "docs" / "FORMAT.md"
# FORMAT.md names that no module spells, with why: an input's name in an example, a name made from a suffix
NOT_SPELLED = {"train-00000-of-00004.parquet": "an input file in an example",
               "emb.provenance.json": "<stem>.provenance.json beside any .npy (layout.NPY_PROVENANCE_SUFFIX)"}


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def modules(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def dotted(path: Path) -> str:
    """pipeline/dedup/run.py → pipeline.dedup.run; pipeline/dedup/__init__.py → pipeline.dedup."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a module lives in (a package's __init__ lives in itself)."""
    name = dotted(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import of a module, at any depth (lazy imports inside functions count too):
    (line, absolute module imported from, names imported from it; [] for `import x`)."""
    out = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            out.append((node.lineno, module, [alias.name for alias in node.names]))
    return out


def docstring_nodes(tree: ast.Module) -> set[int]:
    """ids of the Constant nodes that are module, class or function docstrings."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def stage_of(module: str) -> str | None:
    """pipeline.<stage>... → the stage; the package itself and the contract modules → "top"; a facade →
    "facade"; another top-level module → "unknown pipeline.<name>" (to be placed here first); outside → None."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return None
    if len(parts) == 1 or parts[1] in CORE or parts[1].startswith("__"):
        return "top"
    if parts[1] in FACADES:
        return "facade"
    if (PIPELINE / parts[1]).is_dir():
        return parts[1]
    return f"unknown pipeline.{parts[1]}"


def may_import(importer: str, imported: str) -> bool:
    """The import rule between two stages (or "top")."""
    if importer == imported or imported == "top":
        return True
    if importer == "top":
        return imported == "io"  # the contract modules sit on io (files, schema, shards) and nothing else
    if importer == "facade":
        return imported in STAGES + LEAVES
    if imported in LEAVES or imported == "facade":
        return False  # leaves and facades are imported by no other stage
    if importer in LEAVES:
        return imported in STAGES
    if importer in STAGES and imported in STAGES:
        return STAGES.index(imported) < STAGES.index(importer)
    return False  # a stage folder or top-level module this test does not know yet: place it above first


# --------------------------------------------------------------------------- the checks


def test_the_stage_folders_and_top_level_modules_are_the_ones_this_test_knows():
    folders = sorted(p.name for p in PIPELINE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(STAGES + LEAVES)
    top = sorted(p.stem for p in PIPELINE.glob("*.py") if p.name != "__init__.py")
    assert set(top) <= set(CORE + FACADES), f"place {sorted(set(top) - set(CORE + FACADES))} in CORE or FACADES"


def test_exactly_one_fingerprint_function():
    defs = [f"{rel(p)}:{node.lineno}" for p in modules(PIPELINE) for node in ast.walk(parse(p))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "fingerprint"]
    assert len(defs) == 1 and defs[0].startswith("pipeline/provenance.py:"), \
        f"`def fingerprint` must exist once, in pipeline/provenance.py; found {defs}"


def test_only_layout_names_the_record_files():
    hits = []
    for path in modules(PIPELINE):
        if path == PIPELINE / "layout.py":
            continue
        tree = parse(path)
        docs = docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                hits += [f"{rel(path)}:{node.lineno} {name!r}" for name in RECORD_NAMES if name in node.value]
    assert not hits, "only pipeline/layout.py may name these files (ask it for the path or the record):\n" + \
        "\n".join(hits)


def format_file_names() -> set[str]:
    """The file names docs/FORMAT.md gives in backticks (`dedup/groups.parquet` → groups.parquet), less patterns
    (`<shard>.parquet`, `*.parquet`, `part-NNNNN.json`) and bare suffixes (`.npy`)."""
    found = re.findall(r"`([^`\s]+\.(?:parquet|json|faiss|csv|npy))`", FORMAT.read_text())
    names = {m.rpartition("/")[2] for m in found}
    return {n for n in names if not n.startswith(".") and not re.search(r"[<>*]|NNNN", n)}


def spellings(name: str) -> list[str]:
    """`module:line` of every string literal under pipeline/ (docstrings excluded; f-strings' text counted) that
    spells `name` as a whole file name (`graph.json` is not spelled by `_graph.json`)."""
    pattern = re.compile(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])")
    hits = []
    for path in modules(PIPELINE):
        tree = parse(path)
        docs = docstring_nodes(tree)
        hits += [f"{rel(path)}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in docs and pattern.search(node.value)]
    return hits


def test_each_file_name_of_the_format_is_spelled_in_one_module():
    names = format_file_names()
    assert {"groups.parquet", "selected.parquet", "index.faiss", "ids.parquet", "config.json"} <= names
    owners = {name: sorted({hit.partition(":")[0] for hit in spellings(name)}) for name in sorted(names)}
    unowned = [name for name, where in owners.items() if not where and name not in NOT_SPELLED]
    shared = {name: spellings(name) for name, where in owners.items() if len(where) > 1}
    spelled = {name: where for name, where in owners.items() if where and name in NOT_SPELLED}
    assert not shared, f"file names spelled in more than one module (ask the owner's constant): {shared}"
    assert not unowned, f"FORMAT.md names these files but no module under pipeline/ spells them: {unowned}"
    assert not spelled, f"NOT_SPELLED names that a module spells now (drop them from NOT_SPELLED): {spelled}"


def reads_fingerprint(node: ast.AST) -> bool:
    """`x["fingerprint"]` or `x.get("fingerprint", ...)` anywhere inside `node`."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and sub.slice.value == "fingerprint":
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get" \
                and sub.args and isinstance(sub.args[0], ast.Constant) and sub.args[0].value == "fingerprint":
            return True
    return False


def test_fingerprints_are_compared_only_in_provenance():
    hits = [f"{rel(path)}:{node.lineno}" for path in modules(PIPELINE) if path != PIPELINE / "provenance.py"
            for node in ast.walk(parse(path)) if isinstance(node, ast.Compare) and reads_fingerprint(node)]
    assert not hits, "fingerprints compared by hand (use pipeline.provenance.same or carries):\n" + "\n".join(hits)


TORCH = "torch and timm"
# Imports of one pipeline module by another inside a function, each with why it is late. Anything else imports
# at the top: a late import must not hide a cycle (move the shared helper down a level instead).
LATE_IMPORTS = {
    ("pipeline.layout", "pipeline.io.shards"): "PIL, braceexpand and tarfile for every reader of layout, for one "
                                              "method (every job's --help imports layout)",
    ("pipeline.extract.demo", "pipeline.extract.weights"): f"{TORCH}: `demo --help` and its listing stay light",
    ("pipeline.extract.demo", "pipeline.extract.runner"): f"{TORCH}: `demo --help` and its listing stay light",
    ("pipeline.extract.demo", "pipeline.extract.pack"): "webdataset, and with it torch",
    ("pipeline.extract.ray", "pipeline.extract.backbone"): f"{TORCH} load in the Ray actor, not in the driver",
    ("pipeline.extract.ray", "pipeline.extract.device"): "torch loads in the Ray actor, not in the driver",
    ("pipeline.extract.ray", "pipeline.extract.runner"): f"{TORCH} load in the Ray actor, not in the driver",
    ("pipeline.index.search", "pipeline.extract.runner"): f"{TORCH} only when the queries are images",
    ("pipeline.serve.embed", "pipeline.extract.backbone"): f"{TORCH}: the model loads on the first image query",
    ("pipeline.serve.embed", "pipeline.extract.device"): "torch: the model loads on the first image query",
    ("pipeline.serve.embed", "pipeline.extract.loader"): f"{TORCH}: the model loads on the first image query",
    ("pipeline.serve.embed", "pipeline.extract.prefetch"): "torch: the model loads on the first image query",
    ("pipeline.serve.images", "pipeline.io.samples"): "webdataset, and with it torch: only for shard sources",
    # the facade: one call per stage, each stage imported when called (api.py is being reworked for typed results)
    **{("pipeline.api", f"pipeline.{stage}"): "the facade imports a stage when it is called" for stage in (
        "extract.runner", "roots.features", "index.build", "index.knn", "index.search", "dedup.run",
        "curate.retrieval", "curate.export", "evaluate.run", "report.run")},
}


def late_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import of a pipeline module inside a function (at any depth) of `path`."""
    tree = parse(path)
    inside = {node for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    out = set()
    for node in inside:
        if isinstance(node, ast.Import):
            out |= {(node.lineno, alias.name) for alias in node.names}
        else:
            module = node.module or ""
            if node.level:
                base = package_of(path).split(".")
                module = ".".join(base[: len(base) - (node.level - 1)] + ([module] if module else []))
            out.add((node.lineno, module))
    return sorted((line, module) for line, module in out if module.split(".")[0] == "pipeline")


def test_no_pipeline_module_imports_another_inside_a_function_but_the_listed_ones():
    found = {(dotted(path), module): f"{rel(path)}:{line}" for path in modules(PIPELINE)
             for line, module in late_imports(path)}
    unlisted = [f"{where} imports {module}" for (importer, module), where in found.items()
                if (importer, module) not in LATE_IMPORTS]
    assert not unlisted, ("imports inside a function (move the shared helper down a level and import it at the "
                          "top, or list a deliberately late heavy import in LATE_IMPORTS with why):\n"
                          + "\n".join(unlisted))
    stale = sorted(set(LATE_IMPORTS) - set(found))
    assert not stale, f"LATE_IMPORTS lists imports that are gone or at the top now (drop them): {stale}"


def is_submodule(module: str, name: str) -> bool:
    """`from module import name` imports a module (a .py file or a package folder), not a name in one."""
    base = REPO.joinpath(*module.split("."), name)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def private_imports(path: Path) -> list[str]:
    """Imports of a private name (`from pipeline.x import _helper`: a module's insides), anywhere, and of a
    private module (`_name.py`) from outside the package it belongs to."""
    hits = []
    here = package_of(path)

    def inside(owner: str) -> bool:
        return here == owner or here.startswith(owner + ".")

    for line, module, names in imports(path):
        parts = module.split(".")
        if parts[0] not in ("pipeline", "jobs"):
            continue
        for i, part in enumerate(parts):
            if is_private(part) and not inside(".".join(parts[:i])):
                hits.append(f"{rel(path)}:{line} imports the private module {module}")
        for name in filter(is_private, names):
            if not (is_submodule(module, name) and inside(module)):
                hits.append(f"{rel(path)}:{line} from {module} import {name}")
    return hits


def test_no_private_name_is_imported():
    hits = [hit for path in modules(PIPELINE, JOBS) for hit in private_imports(path)]
    assert not hits, "private names used outside their module (make them public, or move the code):\n" + \
        "\n".join(hits)


def test_no_module_is_longer_than_400_lines():
    long = {rel(p): n for p in modules(PIPELINE) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by role): {long}"


def test_no_stage_imports_a_later_stage():
    hits = []
    for path in modules(PIPELINE):
        importer = stage_of(dotted(path))
        for line, module, names in imports(path):
            targets = [module] if module != "pipeline" else [f"pipeline.{n}" for n in names] or [module]
            for target in targets:
                imported = stage_of(target)
                if imported is not None and not may_import(importer, imported):
                    hits.append(f"{rel(path)}:{line} ({importer}) imports {target} ({imported})")
    assert not hits, ("imports against the data flow (io < roots < extract < index < dedup < curate < evaluate, "
                      "report, bench; top-level modules import only pipeline.io):\n" + "\n".join(hits))


def test_io_holds_formats_only_below_the_contract_modules():
    """io (files, shards, decoding, hashes, schemas) imports nothing of the stages, of layout or provenance:
    only itself and pipeline.errors; what reads an output root lives in pipeline.roots."""
    hits = [f"{rel(path)}:{line} imports {module}" for path in modules(PIPELINE / "io")
            for line, module, _ in imports(path)
            if module.startswith("pipeline") and not module.startswith(("pipeline.io", "pipeline.errors"))]
    assert not hits, "io imports above itself:\n" + "\n".join(hits)


def run_functions(path: Path) -> list[ast.FunctionDef]:
    """The public module-level `run_*` functions of a module: each stage's entry point."""
    return [node for node in parse(path).body if isinstance(node, ast.FunctionDef) and node.name.startswith("run_")]


def returns_dict(annotation: ast.expr | None) -> bool:
    """`-> dict`, `-> dict[str, ...]`, `-> "dict"`, or a union holding one of them."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    if isinstance(annotation, ast.BinOp):
        return returns_dict(annotation.left) or returns_dict(annotation.right)
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    return isinstance(annotation, ast.Name) and annotation.id in ("dict", "Dict")


def test_every_stage_returns_a_typed_result():
    """A stage's `run_*` returns its frozen result dataclass (counts, paths, seconds, the record as `record`),
    never a bare dict that the CLI and the API would each read by key."""
    unannotated, dicts = [], []
    for path in modules(PIPELINE):
        for fn in run_functions(path):
            where = f"{rel(path)}:{fn.lineno} {fn.name}"
            if fn.returns is None:
                unannotated.append(where)
            elif returns_dict(fn.returns):
                dicts.append(where)
    assert not unannotated, "run_* functions without a return annotation:\n" + "\n".join(unannotated)
    assert not dicts, "run_* functions returning a dict (return the stage's *Result dataclass):\n" + \
        "\n".join(dicts)


def test_every_config_lives_in_its_stages_config_module():
    stray = [f"{rel(path)}:{node.lineno} {node.name}" for path in modules(PIPELINE) if path.name != "config.py"
             for node in parse(path).body if isinstance(node, ast.ClassDef) and node.name.endswith("Config")]
    assert not stray, "*Config classes outside their stage's config.py:\n" + "\n".join(stray)


@pytest.mark.parametrize("path", modules(PIPELINE, JOBS), ids=rel)
def test_every_module_opens_with_a_one_line_summary(path):
    doc = ast.get_docstring(parse(path), clean=False)
    assert doc and doc.strip(), f"{rel(path)} has no module docstring"
    lines = doc.splitlines()
    assert lines[0].strip(), f"{rel(path)}: the docstring's first line is empty; put the summary there"
    assert len(lines) == 1 or not lines[1].strip(), \
        f"{rel(path)}: the summary runs over two lines; make it one line, then a blank line, then details"


# --------------------------------------------------------------------------- the checkers themselves


def test_checkers_on_made_up_code(tmp_path, monkeypatch):
    assert may_import("dedup", "index") and may_import("report", "curate") and may_import("curate", "top")
    assert not may_import("index", "dedup") and not may_import("curate", "report")
    assert not may_import("report", "evaluate") and not may_import("bench", "report")
    assert may_import("top", "io") and not may_import("top", "extract")
    assert stage_of("pipeline.errors") == "top" and stage_of("pipeline") == "top"
    assert stage_of("pipeline.__version__") == "top" and stage_of("pipeline.api") == "facade"
    assert stage_of("pipeline.helpers") == "unknown pipeline.helpers"
    assert not may_import("unknown pipeline.helpers", "io") and not may_import("io", "unknown pipeline.helpers")
    assert may_import("facade", "report") and not may_import("report", "facade") and not may_import("top", "facade")
    assert stage_of("pipeline.dedup.run") == "dedup" and stage_of("numpy") is None
    assert is_private("_x") and not is_private("__version__") and not is_private("x")
    returned = {fn.name: returns_dict(fn.returns) for fn in ast.parse(
        "def run_a() -> dict: ...\ndef run_b() -> dict[str, int]: ...\ndef run_c() -> 'dict': ...\n"
        "def run_d() -> A | dict: ...\ndef run_e() -> DedupResult: ...\ndef run_f() -> list[dict]: ...\n"
        "def run_g(): ...\n").body}
    assert returned == {"run_a": True, "run_b": True, "run_c": True, "run_d": True, "run_e": False,
                        "run_f": False, "run_g": False}
    tree = ast.parse('"""Doc."""\nX = "a/config.json"\ndef f():\n    """summary.json here is a docstring."""\n')
    docs = docstring_nodes(tree)
    found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs]
    assert found == ["a/config.json"]
    compare = ast.parse('a.get("fingerprint") != fp\n(x["k"], y["fingerprint"]) == t\nsame(a, b)\n').body
    assert [reads_fingerprint(stmt.value) for stmt in compare] == [True, True, False]

    files = {"pipeline/__init__.py": "", "pipeline/a/__init__.py": "", "pipeline/a/_helper.py": "",
             "pipeline/a/b.py": "from pipeline.a import _helper\nfrom . import _helper\nfrom ._helper import g\n"
                                "from pipeline.a.c import _f\n",
             "pipeline/a/c.py": "", "pipeline/z/__init__.py": "",
             "pipeline/z/y.py": "from pipeline.a._helper import g\nfrom pipeline.a import _helper\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert imports(tmp_path / "pipeline/a/b.py")[1:3] == [(2, "pipeline.a", ["_helper"]),
                                                           (3, "pipeline.a._helper", ["g"])]
    assert private_imports(tmp_path / "pipeline/a/b.py") == ["pipeline/a/b.py:4 from pipeline.a.c import _f"]
    (tmp_path / "pipeline/a/late.py").write_text("import os\ndef f():\n    import json\n    from . import c\n"
                                                 "    def g():\n        import pipeline.z.y\n")
    assert late_imports(tmp_path / "pipeline/a/late.py") == [(4, "pipeline.a"), (6, "pipeline.z.y")]
    assert private_imports(tmp_path / "pipeline/z/y.py") == [
        "pipeline/z/y.py:1 imports the private module pipeline.a._helper",
        "pipeline/z/y.py:2 from pipeline.a import _helper"]
