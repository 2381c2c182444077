"""--compile auto: the decision's arithmetic, the ledger, the state machine's paths, and a real compile."""

from __future__ import annotations

import io
import json
import math
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.extract import compiled as cmod
from pipeline.extract.compiled import (
    CompileCosts,
    CompiledForward,
    Ledger,
    break_even,
    use_compile_cache,
    worth_compiling,
)
from pipeline.extract.config import ExtractConfig
from pipeline.io.counts import count_samples, shard_samples
from pipeline.io.shards import Shard


def test_the_decision_is_the_time_saved_against_the_compile_time():
    costs = CompileCosts(compile_seconds=30.0, speedup=1.5, source="t")
    # 10 images/s eager: each image saves 0.1 - 0.0667 = 0.0333 s, so 900 images repay 30 s
    assert break_even(10.0, costs) == pytest.approx(900.0)
    assert worth_compiling(901, 10.0, costs) and not worth_compiling(899, 10.0, costs)
    slower = CompileCosts(1.0, 0.9, "t")
    assert break_even(10.0, slower) == float("inf") and not worth_compiling(10**9, 10.0, slower)


def test_the_ledger_keeps_the_first_compile_counts_runs_and_survives_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "graphs"))
    default = CompileCosts(50.0, 1.2, "the test default")
    ledger = Ledger(tmp_path / "c" / "compile.json")
    assert ledger.get("k", default) is default
    ledger.record("k", 30.0, None, None)  # a --compile on run: no eager pass timed, no speed-up
    costs = ledger.get("k", default)  # the graphs' cache is gone: the compile measured, the default speed-up
    assert (costs.compile_seconds, costs.speedup) == (30.0, 1.2)
    assert costs.source == "1 compile measured on this machine; speed-up the test default"
    (tmp_path / "graphs").mkdir()
    costs = ledger.get("k", default)  # cached now: the next compile is predicted at CACHED_SHARE of it
    assert costs.compile_seconds == pytest.approx(30.0 * cmod.CACHED_SHARE) and "now cached" in costs.source
    ledger.record("k", 4.0, 1.4, 38.0)
    entry = json.loads(ledger.path.read_text())["k"]
    assert entry["compile_seconds"] == 4.0 and entry["first_compile_seconds"] == 30.0
    assert entry["speedup"] == 1.4 and entry["eager_images_per_second"] == 38.0 and entry["runs"] == 2
    costs = ledger.get("k", default)
    assert (costs.compile_seconds, costs.speedup) == (4.0, 1.4)
    assert costs.source == "2 compiles measured on this machine; speed-up measured"
    ledger.path.write_text("{not json")
    assert ledger.get("k", default) is default and ledger.read() == {}


class Slow:
    """A forward pass of a known cost per image; compiled, `factor` times faster."""

    def __init__(self, per_image: float) -> None:
        self.per_image, self.calls = per_image, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        time.sleep(self.per_image * len(x))
        return x * 2


@pytest.fixture
def fake_compile(monkeypatch):
    """torch.compile as a 2x faster version of the function, after a known compile time; records its calls."""
    made = []

    def compile_(fn, dynamic=None):
        made.append(dynamic)
        state = {"first": True}

        def fast(x):
            if state["first"]:
                time.sleep(0.05)  # the compile
                state["first"] = False
            time.sleep(fn.per_image * len(x) / 2)
            fast.calls.append(len(x))
            return x * 2
        fast.calls = []
        made.append(fast)
        return fast

    monkeypatch.setattr(cmod.torch, "compile", compile_)
    return made


def forward_of(mode, tmp_path, per_image=0.002, not_possible=None):
    return CompiledForward(Slow(per_image), mode, torch.device("cpu"), "key", depth=12, precision="bf16",
                           not_possible=not_possible, ledger=Ledger(tmp_path / "compile.json"))


def run(fwd, batches, size=8):
    x = torch.ones(size, 3)
    for _ in range(batches):
        assert torch.equal(fwd(x), x * 2)


def test_auto_compiles_a_long_run_records_its_costs_and_leaves_other_shapes_eager(tmp_path, fake_compile, caplog):
    fwd = forward_of("auto", tmp_path)
    fwd.default = CompileCosts(0.05, 2.0, "test default")
    fwd.plan(lambda enough: 10_000)
    with caplog.at_level("INFO"):
        run(fwd, 8)
        assert torch.equal(fwd(torch.ones(3, 3)), torch.ones(3, 3) * 2)  # the last, smaller batch
    assert fwd.is_compiled and fake_compile[0] is False  # dynamic=False: one shape, never recompiled
    fast = fake_compile[1]
    assert fwd.forward.calls == [8, 8, 8, 3]  # warm-up + 2 timed eager, then the small batch eager
    assert fast.calls == [8] * 5
    assert "compiling the forward pass: 9976 images left" in fwd.why and "test default" in fwd.why
    entry = json.loads((tmp_path / "compile.json").read_text())["key|batch 8x3"]
    assert 1.3 < entry["speedup"] < 3.0 and entry["runs"] == 1  # sleeps: 2x, within the timer's noise
    # the next run decides from what this one measured
    again = forward_of("auto", tmp_path)
    again.plan(lambda enough: 10_000)
    run(again, 4)
    assert "1 compile measured on this machine" in again.why and "speed-up measured" in again.why


def test_auto_stays_eager_on_a_short_run_and_when_the_size_is_unknown(tmp_path, fake_compile):
    short = forward_of("auto", tmp_path)
    short.default = CompileCosts(60.0, 1.4, "test default")
    asked = []
    short.plan(lambda enough: asked.append(enough) or 100)
    run(short, 6)
    # counted once, after the timed eager batches, up to what would repay 60 s: 24 seen + the break-even + 1
    assert len(asked) == 1 and asked[0] == 24 + math.ceil(break_even(cmod._rate(short.eager), short.default)) + 1
    assert not short.is_compiled and not fake_compile
    assert short.why.startswith("not compiled: 76 images left") and "repays after" in short.why
    unknown = forward_of("auto", tmp_path)
    unknown.plan(lambda enough: None)
    run(unknown, 5)
    assert not unknown.is_compiled and "not known" in unknown.why and not fake_compile


def test_auto_without_a_plan_off_and_not_possible_never_compile(tmp_path, fake_compile):
    for fwd in (forward_of("auto", tmp_path), forward_of("off", tmp_path),
                forward_of("auto", tmp_path, not_possible="dynamic resolution")):
        if fwd.not_possible:
            fwd.plan(lambda enough: 10**9)
        run(fwd, 5)
        assert not fwd.is_compiled and fwd.forward.calls == [8] * 5
    assert not fake_compile


def test_on_compiles_at_once_and_a_compile_error_falls_back_to_eager(tmp_path, fake_compile, monkeypatch, caplog):
    on = forward_of("on", tmp_path)
    run(on, 3)
    assert on.is_compiled and on.forward.calls == [] and on.why == "--compile on"

    def broken(fn, dynamic=None):
        raise RuntimeError("inductor says no")

    monkeypatch.setattr(cmod.torch, "compile", broken)
    failing = forward_of("on", tmp_path)
    with caplog.at_level("WARNING"):
        run(failing, 2)
    assert not failing.is_compiled and failing.forward.calls == [8, 8]
    assert "torch.compile failed (RuntimeError: inductor says no)" in failing.why
    assert "torch.compile failed" in caplog.text


def test_the_compile_cache_goes_to_the_users_cache_unless_told(monkeypatch, tmp_path):
    monkeypatch.setenv("DINOCURATE_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert use_compile_cache() == tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine"


def test_config_takes_the_old_booleans_and_refuses_other_words():
    base = dict(out="o", images="i")
    assert ExtractConfig(**base).compile == "auto"
    assert ExtractConfig(**base, compile=True).compile == "on"
    assert ExtractConfig(**base, compile=False).compile == "off"
    with pytest.raises(ConfigError, match="compile must be one of auto, on, off"):
        ExtractConfig(**base, compile="yes")


def test_the_command_line_takes_compile_alone_or_a_mode():
    import argparse

    from jobs.extract import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--images", "x", "--out", "o"]).compile == "auto"
    assert parser.parse_args(["--images", "x", "--out", "o", "--compile"]).compile == "on"
    assert parser.parse_args(["--images", "x", "--out", "o", "--compile", "off"]).compile == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--images", "x", "--out", "o", "--compile", "maybe"])


def test_samples_are_counted_from_files_footers_and_tar_headers(tmp_path):
    folder = Shard("f", root=str(tmp_path), files=("a.jpg", "b.jpg", "c.png"))
    assert shard_samples(folder) == 3
    table = pa.table({"key": [str(i) for i in range(25)], "image": [b"x"] * 25})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=10)
    assert shard_samples(Shard("p", url=str(tmp_path / "p.parquet"), row_groups=(1, 3))) == 15
    tar_path = tmp_path / "s.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name in ("a.jpg", "a.json", "b.jpg", "sub/c.jpg", "sub/c.txt", "d.e.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    assert shard_samples(Shard("s", url=str(tar_path))) == 4  # a, b, sub/c, d
    assert count_samples([folder, Shard("s", url=str(tar_path))]) == 7
    # counting stops once there are enough: the tar after the folder is never opened
    assert count_samples([folder, Shard("m", url=str(tmp_path / "missing.parquet"), row_groups=(0, 1))], 3) == 3
    assert shard_samples(Shard("r", url="https://example.org/s.tar")) is None
    assert shard_samples(Shard("g", url=str(tmp_path / "s.tar.gz"))) is None
    assert count_samples([folder, Shard("m", url=str(tmp_path / "missing.parquet"), row_groups=(0, 1))]) is None


def test_a_real_compile_of_the_tiny_model_matches_eager(tmp_path, monkeypatch):
    """torch.compile itself (not a stand-in), one shape compiled, the other eager; features as eager's."""
    import timm

    monkeypatch.setenv("DINOCURATE_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, depth=1,
                              embed_dim=64, num_heads=2).eval()
    fwd = CompiledForward(model.forward_features, "on", torch.device("cpu"), "tiny", depth=1, precision="fp32",
                          ledger=Ledger(tmp_path / "compile.json"))
    x = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, other = fwd(x), fwd(x[:3])
        want = model.forward_features(x)
    assert fwd.is_compiled and fwd.compile_seconds > 0
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    np.testing.assert_allclose(other.numpy(), want[:3].numpy(), atol=1e-4)
    assert (tmp_path / "inductor").is_dir()
