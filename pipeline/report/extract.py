"""The report's extract section: provenance, counts, throughput from the markers, failures with their keys."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from pipeline.layout import OutputRoot
from pipeline.report.html import facts_html, plural, table_html
from pipeline.report.plots import plot_throughput

if TYPE_CHECKING:
    from pipeline.report.run import Report


def extract_section(rep: Report, root: OutputRoot) -> None:
    """Provenance, counts, throughput from the markers, failures by reason with the failing keys."""
    cfg = rep.cfg
    page = rep.index
    page.add('<section id="extract"><h2>Extract</h2>')
    config = root.read_config() or {}
    prov, ecfg = config.get("provenance", {}), config.get("config", {})
    weights = prov.get("weights") or {}
    markers = root.markers()
    reasons: Counter = Counter()
    for m in markers:
        reasons.update(m.get("failures_by_reason", {}))
    digest = str(weights.get("sha256", ""))
    facts = [("model", prov.get("model", "")),
             ("weights", " ".join(dict.fromkeys([weights.get("source", ""), digest[:12]]))),
             ("input", f"{prov.get('input_size', '')} {prov.get('resize_mode', '')}"),
             ("input data", ecfg.get("images") or " ".join(ecfg.get("shards") or [])),
             ("fingerprint", prov.get("fingerprint", "")), ("shards done", len(markers)),
             ("samples", sum(m.get("samples", 0) for m in markers)),
             ("feature rows", sum(m.get("rows", 0) for m in markers)),
             ("failures", sum(m.get("failures", 0) for m in markers)),
             ("damaged shards", sum(1 for m in markers if m.get("damage")))]
    last = (root.read_stats() or {}).get("last_run", {})
    if last.get("failed"):
        facts.append(("shards left undone (last run)", ", ".join(map(str, last["failed"][:20]))))
    if last.get("images_per_second"):
        facts.append(("images/s (last run)", round(float(last["images_per_second"]), 2)))
    page.add(facts_html((k, v) for k, v in facts if str(v).strip()))
    timed = [(m, _finish_time(m)) for m in markers]
    timed = [(m, t) for m, t in timed if t is not None]
    starts = [m["run_started_unix"] for m, _ in timed if m.get("run_started_unix")]
    start = datetime.fromtimestamp(min(starts)).astimezone() if starts else None
    first = start or (min(t for _, t in timed) if timed else None)
    span = (max(t for _, t in timed) - first).total_seconds() if timed else 0.0
    if span > 0:
        plot_throughput([t for _, t in timed], [m.get("rows", 0) for m, _ in timed], rep.folder / "throughput.png",
                        start)
        since = "the run's start" if start else "the first shard's end (the run's start is not recorded)"
        page.add('<div class="plots"><figure class="plot"><img src="throughput.png" alt="throughput over time">'
                 f"<figcaption>{plural(len(timed), 'shard')} finished over {span:.0f} s since {since} "
                 "(marker finish times).</figcaption></figure></div>")
    elif timed:
        page.add(f"<p>{plural(len(timed), 'shard')} finished within one second: no throughput curve.</p>")
    page.add("<h3>Failures by reason</h3>")
    page.add(table_html(["reason", "count"], sorted(reasons.items(), key=lambda kv: -kv[1]))
             if reasons else "<p>No failures.</p>")
    failures = _read_failures(root, [m["shard"] for m in markers if m.get("failures_by_reason")], cfg.max_failures)
    if failures:
        page.add("<h3>Failing keys</h3>")
        page.add(table_html(["reason", "stage", "key", "shard", "index", "detail"],
                            [[f["reason"], f["stage"], f["key"], f["shard"], f["index"], f["detail"]]
                             for f in failures]))
        n_all = sum(reasons.values())
        if n_all > len(failures):
            page.add(f"<p>{n_all - len(failures)} more in failures/*.parquet.</p>")
    rep.info["extract"] = {"shards": len(markers), "failures": sum(reasons.values())}
    page.add("</section>")


def _finish_time(marker: dict) -> datetime | None:
    """When a shard was written: the exact unix time, else the 1 s text stamp of older markers."""
    if marker.get("finished_unix"):
        return datetime.fromtimestamp(float(marker["finished_unix"])).astimezone()
    try:
        return datetime.strptime(marker["finished"], "%Y-%m-%dT%H:%M:%S%z") if marker.get("finished") else None
    except ValueError:
        return None


def _read_failures(root: OutputRoot, shards: list[str], limit: int) -> list[dict]:
    """The first `limit` failure rows of these shards, in shard order."""
    out: list[dict] = []
    for shard in shards:
        path = root.failure_path(shard)
        if path.exists() and len(out) < limit:
            out += pq.read_table(path).to_pylist()[:limit - len(out)]
    return out
