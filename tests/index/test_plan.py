"""The memory, disk and time model (pipeline/index/plan.py): its arithmetic by hand, `--plan` on every job."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.index.plan import OVERHEAD, Rates, Workload, index_shape, predict
from tests.conftest import REPO, clustered_vectors, listing, run_module, write_feature_root

RATES = Rates(gemm_flops=1e9, scan_codes=1e8, query_seconds=1e-5, encode_seconds=1e-6, read_rows=1e5,
              graph_rows=4e5, rescore_pairs=1e6, pair_checks=1e7, python_rows=1e6)
SMALL = Workload(n=200_000, dim=64, factory="IVF256,PQ16x4fs", k=8, base_bytes=1e8, batch_rows=1000, part_rows=1000,
                 train_size=10_000, meta_row_bytes=50, ids_row_bytes=20, ids_disk_row_bytes=10,
                 graph_disk_row_bytes=90, rescore_rows=50_000, groups_disk_row_bytes=30)


def test_index_shapes_of_the_factories_the_jobs_choose():
    pq = index_shape("IVF256,PQ16x4fs", 64)  # 16 four-bit codes = 8 bytes, and the list's 8-byte id
    assert (pq.kind, pq.nlist, pq.code_bytes, pq.fixed_bytes, pq.fastscan) == ("ivf", 256, 16, 256 * 64 * 4, True)
    flat = index_shape("Flat", 64)
    assert (flat.kind, flat.code_bytes, flat.fixed_bytes) == ("flat", 256, 0)
    assert index_shape("IVF100,SQ8", 32).code_bytes == 32 + 8
    with pytest.raises(ConfigError, match="not an index Faiss can build"):
        index_shape("IVF,bogus", 32)


def test_model_arithmetic_by_hand():
    """Every figure of a small workload, computed here term by term from the structures the model names."""
    plan = predict(SMALL, RATES)
    up = 1 + OVERHEAD
    # index: 200k × (8 code bytes + 8 id bytes) + 256 lists × 16 spare slots × 8 bytes (fast-scan blocks of 32)
    codes, fixed = 200_000 * 16 + 256 * 16 * 8, 256 * 64 * 4
    writing = codes + fixed + 200_000 * 20 * 2  # the index and the ids table (Arrow, then its Parquet copy)
    training = 10_000 * 64 * 4 * 2 + fixed  # the sample and its residuals
    adding = codes * 1.1 + fixed + 1000 * 64 * (2 + 8)
    assert writing > max(training, adding)
    index = plan.stages["index"]
    assert index.peak_bytes == pytest.approx((1e8 + writing) * up)
    assert index.disk_bytes == pytest.approx(codes + fixed + 200_000 * 10)
    coarse = 256 * 64 * 2 / 1e9  # one vector against every centroid
    assert index.seconds == pytest.approx(10 * 10_000 * 256 * 64 * 2 / 1e9 + 10_000 * 1e-6
                                          + 200_000 * (coarse + 1e-6) + 200_000 / 1e5)
    # graph: the index and one part (its vectors three times as float32, k + 1 results of 12 bytes, four times)
    part = 1000 * 64 * 4 * 3 + 1000 * 9 * 12 * 4 + 1000 * 16 * 8 * 16  # + fast-scan tables: 16 lists × 8 code bytes
    graph = plan.stages["graph"]
    assert graph.peak_bytes == pytest.approx((1e8 + codes + fixed + part) * up)
    assert graph.disk_bytes == 200_000 * 90
    scanned = 200_000 * 16 / 256  # nprobe: the index's default, max(16, nlist / 64)
    assert graph.seconds == pytest.approx(200_000 * (coarse + 1e-5 + scanned / 1e8) + 200_000 / 1e5)
    # dedup: float16 vectors, the metadata (Arrow) and the pHashes held throughout, the turned/flipped pHashes
    # until the re-scoring; its windows add their largest phase
    vectors = 200_000 * 64 * 2
    rows, rest_rows = vectors + 200_000 * (50 + 8 * 8), vectors + 200_000 * (50 + 8)
    assert writing > 200_000 * 48  # the index and its ids table outweigh the exact stage's grouping of the sha1s
    assert plan.stages["dedup:index"].peak_bytes == pytest.approx((1e8 + rows + writing) * up)
    assert plan.stages["dedup:graph"].peak_bytes == pytest.approx((1e8 + rows + codes + fixed + part) * up)
    rescore = 50_000 * 64 * 4 + 16384 * 8 * 40 + 1000 * 8 * 12 * 3
    assert 200_000 * 280 > rescore
    assert plan.stages["dedup:rest"].peak_bytes == pytest.approx((1e8 + rest_rows + 200_000 * 280) * up)
    dedup = plan.stages["dedup"]
    assert dedup.peak_bytes == plan.stages["dedup:rest"].peak_bytes
    assert dedup.disk_bytes == pytest.approx(codes + fixed + 200_000 * 10 + 200_000 * 90 + 200_000 * 30)
    pairs = 200_000 * 8
    # the pHash check of every candidate, one pass over the graph for it and one per re-scoring block
    assert plan.stages["dedup:rest"].seconds == pytest.approx(pairs * 16 / 1e7 + 5 * 200_000 / 4e5 + pairs / 1e6
                                                              + 3 * 200_000 / 1e6)
    assert dedup.bound_by == "vectors (float16)" or dedup.bound_by.startswith("groups")
    assert "4 pass(es)" in dedup.streams  # 200k rows in blocks of 50k


def test_model_scales_as_its_structures_do():
    small = predict(SMALL, RATES)
    big = predict(Workload(**{**SMALL.__dict__, "n": 2_000_000}), RATES)
    base = SMALL.base_bytes * (1 + OVERHEAD)
    assert big.stages["dedup:graph"].peak_bytes - base > 9 * (small.stages["dedup:graph"].peak_bytes - base)
    assert big.stages["graph"].disk_bytes == 10 * small.stages["graph"].disk_bytes
    with pytest.raises(ConfigError, match="nothing to plan"):
        predict(Workload(n=0, dim=64, factory="Flat"))
    with pytest.raises(ConfigError, match="k must be"):
        predict(Workload(n=10, dim=64, factory="Flat", k=0))


def peak_and_disk(text: str, title: str) -> tuple[float, float]:
    m = re.search(rf"{re.escape(title)}: peak ([\d.]+) GiB .*?, disk ([\d.]+) GiB", text)
    assert m, text
    return float(m[1]) * 2**30, float(m[2]) * 2**30


def measured(*args: str) -> float:
    """Run a job as a user does; its own peak RSS in bytes: VmHWM, reset once the child has exec'd (the fork
    of this large process would otherwise count) and read until it exits (it only grows)."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    while b"jobs." not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # until the exec
        time.sleep(0.001)
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                                  if line.startswith("VmHWM:")))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            break
        time.sleep(0.01)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    return peak


def du(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_plan_predicts_a_measured_index_and_dedup(tmp_path):
    """The plan printed by `--plan`, then the job itself: peak RSS and disk within 20 % (the issue's bar for
    1M and 10M). At this size the index's lists dominate make index; the job's base (imports) weighs most in
    dedup, which the plan measures in its own process."""
    write_feature_root(tmp_path, clustered_vectors(120_000, 192, 200, seed=7), per_shard=20_000, dtype="float16")
    text = run_module("jobs.index", "--features", str(tmp_path), "--plan", "--log-level", "WARNING").stdout
    assert "IVF1385,Flat" in text and listing(tmp_path) == ["features"]
    peak, disk = peak_and_disk(text, "make index")
    got = measured("jobs.index", "--features", str(tmp_path), "--no-progress", "--log-level", "WARNING")
    assert 0.8 <= got / peak <= 1.2, (got / 2**30, peak / 2**30)
    assert 0.8 <= du(tmp_path / "index") / disk <= 1.2, (du(tmp_path / "index"), disk)
    # make dedup: vectors (float16), per-row records, the Flat index of 40k and the job's own imports
    small = tmp_path / "small"
    # a pool with few copies, as real pools are (the groups phase grows with the edges found)
    write_feature_root(small, clustered_vectors(40_000, 192, 200, spread=1.5, seed=8), per_shard=10_000,
                       dtype="float16")
    text = run_module("jobs.dedup", "--features", str(small), "--plan", "--log-level", "WARNING").stdout
    assert "over Flat (auto)" in text and listing(small) == ["features"]
    peak, disk = peak_and_disk(text, "make dedup, the whole job")
    got = measured("jobs.dedup", "--features", str(small), "--no-progress", "--log-level", "WARNING")
    assert 0.8 <= got / peak <= 1.2, (got / 2**30, peak / 2**30)
    written = du(small / "dedup") - du(small / "dedup" / "summary.json")
    assert 0.8 <= written / disk <= 1.2, (written, disk)


def test_plan_of_every_job_prints_its_choice_and_writes_nothing(tmp_path):
    write_feature_root(tmp_path, clustered_vectors(3000, 32, 20, seed=9), per_shard=1000, dtype="float16")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    index = run_module("jobs.index", "--features", str(tmp_path), "--plan").stdout
    assert "→ Flat (auto at --memory-budget 4 GiB)" in index and "make index: peak" in index
    assert "nothing was built or written" in index and "bounded by:" in index and "streams:" in index
    forced = run_module("jobs.index", "--features", str(tmp_path), "--plan", "--factory", "IVF16,PQ8x4fs").stdout
    assert "→ IVF16,PQ8x4fs" in forced and "16 lists" in forced
    dedup = run_module("jobs.dedup", "--features", str(tmp_path), "--plan", "--out", str(tmp_path / "o")).stdout
    assert "over Flat (auto), nprobe 32" in dedup and "dedup after the graph: peak" in dedup
    curate = run_module("jobs.curate", "--pool", str(tmp_path), "--balanced", "500", "--plan").stdout
    assert "curate --balanced: peak" in curate and "levels [" in curate
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    run_module("jobs.index", "--features", str(tmp_path), "--no-progress")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    knn = run_module("jobs.knn", "--features", str(tmp_path), "--plan", "--k", "16").stdout
    assert "make knn: k=16" in knn and "(Flat, nprobe None)" in knn and "make knn: peak" in knn
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("args", "message"), [
    (("jobs.index", "--features", "{missing}", "--plan"), "error: "),
    (("jobs.index", "--features", "{root}", "--plan", "--factory", "IVF,bogus"), "not an index Faiss can build"),
    (("jobs.knn", "--features", "{root}", "--plan"), "no index in"),
    (("jobs.dedup", "--images", "{root}", "--out", "{root}/o", "--plan"), "--plan works on extracted features"),
    (("jobs.dedup", "--features", "{root}", "--plan", "--sweep", "0.9"), "--plan covers the dedup of one"),
    (("jobs.curate", "--pool", "{root}", "--queries", "a={root}", "--plan"), "--plan covers --balanced"),
])
def test_plan_bad_inputs_are_one_line_errors(tmp_path, args, message):
    root = tmp_path / "root"
    write_feature_root(root, clustered_vectors(200, 16, 4, seed=1), per_shard=100)
    argv = [a.format(root=root, missing=tmp_path / "nothing") for a in args]
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == ["features"]


def test_the_scaling_page_holds_the_models_table():
    """docs/scaling.md's 100M and 1B predictions are the function's output, so the page cannot drift from it."""
    from pipeline.dedup.plan import paper_table

    page = (REPO / "docs" / "scaling.md").read_text()
    block = page.split("<!-- plan-table:")[1].split("<!-- /plan-table -->")[0]
    assert block.split("-->\n", 1)[1].strip() == paper_table()
    assert "| 1,000,000,000 |" in block and "| 100,000,000 |" in block
