"""A static HTML report of an output root: dedup groups and threshold histogram, search, curate, quality, extract.

One self-contained folder (`OUT/report/`): HTML pages with inline CSS and no script, PNG plots, and small JPEG
thumbnails read from the original images (only the ones shown). Every key, path and message from the data is
escaped: keys come from untrusted file names and tar members. The sections are their own modules (dedup,
search, curate, quality, extract); this one decides which apply and writes the pages.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError, MissingInputError
from pipeline.io.files import write_json_atomic
from pipeline.layout import CONFIG, OutputRoot
from pipeline.report.config import ReportConfig
from pipeline.report.curate import SELECTED, curate_section
from pipeline.report.dedup import dedup_section
from pipeline.report.extract import extract_section
from pipeline.report.html import Page, esc
from pipeline.report.quality import has_quality, quality_section
from pipeline.report.results import ReportResult
from pipeline.report.search import read_table, recorded_query, search_html
from pipeline.report.thumbnails import THUMBS, Thumbnails
from pipeline.roots.sources import ImageSource, open_source

log = logging.getLogger(__name__)


@dataclass
class Report:
    """A report being built: the sections add to its pages, ask for thumbnails and note what they showed."""

    cfg: ReportConfig
    folder: Path
    source: ImageSource | None  # where the root's own images are
    thumbs: Thumbnails
    index: Page = field(default_factory=lambda: Page("dinocurate report"))
    pages: dict[str, Page] = field(default_factory=dict)  # dedup-N.html → page
    sections: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def run_report(cfg: ReportConfig) -> ReportResult:
    """Write `OUT/report/index.html` (+ dedup-N.html pages, PNG plots, thumbs/); returns what it holds."""
    t0 = time.perf_counter()
    root = OutputRoot(cfg.out)
    if not root.root.is_dir():
        raise MissingInputError(f"{root.root} does not exist: give an extract output root (OUT)")
    folder = Path(cfg.report) if cfg.report else root.report_dir
    _prepare(folder)
    source = open_source(root.root)
    if source is None:
        log.warning("report: %s has no %s naming its images: thumbnails are left out", root.root, CONFIG)
    elif source.kind == "folder" and not source.path.is_dir():
        log.warning("report: the image folder %s named in %s is not here (a relative path is taken "
                    "from the current directory): thumbnails will be missing", source.path, root.config_path)
    rep = Report(cfg, folder, source, Thumbnails(folder / THUMBS, cfg.thumb_size))
    rep.index.add(f"<h1>{esc(root.root.resolve())}</h1>")
    if root.groups_path.exists():
        rep.sections.append("dedup")
        dedup_section(rep, root)
    if cfg.search:
        rep.sections.append("search")
        rep.index.add('<section id="search"><h2>Search</h2>')
        table = read_table(cfg.search)  # first: a missing or unreadable file is one line
        queries = cfg.search_queries or recorded_query(cfg.search)  # else the query images are left out
        n = search_html(rep.index, rep.thumbs, table, source, queries, cfg.search_max_queries)
        rep.info["search"] = {"queries": n}
        rep.index.add("</section>")
    if (root.curate_dir / SELECTED).exists():
        rep.sections.append("curate")
        curate_section(rep, root)
    if has_quality(root):
        rep.sections.append("quality")
        quality_section(rep, root)
    if root.done.is_dir() or root.config_path.exists():
        rep.sections.append("extract")
        extract_section(rep, root)
    if not rep.sections:
        rep.index.add("<p>Nothing to report: no dedup, curate or extract outputs here.</p>")
    rep.thumbs.fetch()
    nav = '<a href="index.html">overview</a>' + "".join(f'<a href="index.html#{s}">{s}</a>' for s in rep.sections)
    for name, page in [("index.html", rep.index), *rep.pages.items()]:
        (folder / name).write_text(page.render(nav, cfg.thumb_size), encoding="utf-8")
    info = {"report": str(folder / "index.html"), "sections": rep.sections, "pages": 1 + len(rep.pages),
            "thumbnails": rep.thumbs.written, "unavailable": dict(rep.thumbs.missing), **rep.info,
            "seconds": round(time.perf_counter() - t0, 3)}
    write_json_atomic(info, folder / "report.json")
    return ReportResult(folder / "index.html", rep.sections, info["pages"], rep.thumbs.written, info["unavailable"],
                        info["seconds"], info)


def _prepare(folder: Path) -> None:
    """Create the report folder and clear an earlier report in it, or say in one line why it cannot be written
    (a read-only root, a file in the way, no permission), as the other stages do."""
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way")
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable (read-only file system or permissions)")
        _clear_previous(folder)
    except OSError as exc:
        raise InputError(f"cannot write the report into {folder}: {exc.strerror or exc}; choose another folder "
                         f"with --report DIR (make: ARGS='--report DIR')") from exc


def _clear_previous(folder: Path) -> None:
    """Remove what an earlier report wrote (only in a folder that holds our report.json)."""
    if not (folder / "report.json").exists():
        return
    shutil.rmtree(folder / THUMBS, ignore_errors=True)
    for path in [*folder.glob("dedup-*.html"), *folder.glob("*.png"), folder / "index.html"]:
        path.unlink(missing_ok=True)
