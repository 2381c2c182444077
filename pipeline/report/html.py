"""The report's HTML: pages, tiles, tables and facts, with inline CSS and no script.

Every value from the data is escaped: keys come from untrusted file names and tar members.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.report.thumbnails import Thumb

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:10px 20px}header a{color:#b3e5fc;margin-right:14px}
main{padding:0 20px 40px}h2{border-bottom:2px solid #ccc;padding-top:14px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#eee}td.num{text-align:right}
.tiles{display:flex;flex-wrap:wrap;gap:6px}.group,.query{background:#fff;border:1px solid #ddd;margin:10px 0;
padding:6px 8px}.ghead{font-weight:600;margin-bottom:4px}
figure{margin:0;width:__W__px;border:3px solid transparent;font-size:11px}figure.keeper{border-color:#2e7d32}
figure.query{border-color:#1565c0}
figure img,.missing{display:block;max-width:__T__px;max-height:__T__px;margin:auto}
.missing{width:__T__px;height:__H__px;background:#eee;color:#900;display:flex;align-items:center;
justify-content:center;text-align:center;overflow:hidden}
figcaption{overflow-wrap:anywhere;max-height:5.6em;overflow:hidden}figure.keeper figcaption{max-height:none}
.why{display:block;word-break:normal;font-style:italic}
.badge{background:#2e7d32;color:#fff;border-radius:3px;padding:0 4px;font-weight:700}
.badge.drop{background:#b71c1c}.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px}
.pager a,.pager b{margin-right:8px}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure.plot{width:auto;flex:1 1 420px;max-width:560px;font-size:12px}figure.plot figcaption{word-break:normal;
max-height:none}figure.plot img{max-width:100%;max-height:none;
border:1px solid #ddd;background:#fff}.facts span{display:inline-block;margin:0 16px 4px 0}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Page:
    """HTML parts: strings, and thumbnails rendered once they are fetched."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str | Thumb] = []

    def add(self, *parts: str | Thumb) -> None:
        self.parts.extend(parts)

    def render(self, nav: str, thumb_size: int) -> str:
        css = (CSS.replace("__W__", str(thumb_size + 12)).replace("__T__", str(thumb_size))
               .replace("__H__", str(thumb_size * 3 // 4)))
        body = "".join(p if isinstance(p, str) else p.html() for p in self.parts)
        return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(self.title)}</title>'
                f'<meta name="viewport" content="width=device-width"><style>{css}</style></head>\n'
                f'<body><header><b>dinocurate report</b> &nbsp; {nav}</header><main>\n{body}\n</main></body></html>\n')


def tile(thumb: Thumb, caption: str, kind: str = "", badge: str = "") -> list[str | Thumb]:
    """A thumbnail with its caption; `kind` (keeper, query) frames it."""
    cls = f"tile {kind}".strip()
    return [f'<figure class="{cls}" data-key="{esc(thumb.key)}" title="{esc(thumb.key)}">', thumb,
            f'<figcaption>{badge}{caption}</figcaption></figure>']


def table_html(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(v)}</td>' if isinstance(v, (int, float))
                                    else f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def facts_html(facts: Iterable[tuple[str, object]]) -> str:
    """Label: value pairs on one wrapped line."""
    return '<p class="facts">' + "".join(
        f"<span><b>{esc(k)}</b> {_fmt(v) if isinstance(v, (int, float)) else esc(v)}</span>" for k, v in facts) + "</p>"


def _fmt(v: float | int) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return f"{v:,}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_similarity(value: float | None) -> str:
    """A similarity with three decimals; empty when there is none (NaN or null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{min(value, 1.0):.3f}"  # a float16 rounding above 1 (outputs written before they were clipped)
