"""pipeline/bench/machine.py: the capability line from an injected /proc/cpuinfo, precisions, matmul limits."""

from __future__ import annotations

import os

import pytest
import torch

from jobs._args import config_from
from jobs._cli import build_parser
from pipeline.bench.machine import (
    KERNEL_FLAGS,
    bench_precisions,
    capability,
    cpu_model_name,
    format_capability,
    format_limits,
    int8_gops,
    matmul_gflops,
    matmul_limits,
)
from pipeline.bench.run import BenchConfig
from pipeline.errors import ConfigError

CPU = torch.device("cpu")
FAKE_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Fake Xeon 8480+ @ 2.0GHz\n"
                "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 sha_ni\n\n"
                "processor\t: 1\nmodel name\t: Fake Xeon 8480+ @ 2.0GHz\nflags\t\t: fpu\n")


def test_the_capability_line_lists_exactly_the_flags_of_the_cpuinfo_file(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(FAKE_CPUINFO)
    cap = capability(CPU, cpuinfo=str(fake))
    assert cap["cpu"] == "Fake Xeon 8480+ @ 2.0GHz" == cpu_model_name(str(fake))
    assert cap["flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]  # KERNEL_FLAGS' order
    assert cap["cores"] == len(os.sched_getaffinity(0)) and cap["torch_threads"] == torch.get_num_threads()
    assert cap["mkldnn"] == torch.backends.mkldnn.is_available()
    assert cap["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cap["device_name"] is None and cap["device"] == "cpu"
    faiss = pytest.importorskip("faiss")
    assert cap["faiss"] == faiss.get_compile_options().strip()
    line = format_capability(cap)
    assert line == (f"machine: Fake Xeon 8480+ @ 2.0GHz, {cap['cores']} cores, torch {cap['torch_threads']} threads; "
                    f"flags avx2 avx512f avx512_bf16 amx_tile amx_bf16; torch {torch.__version__} (oneDNN "
                    f"{'yes' if cap['mkldnn'] else 'no'}, CPU capability {cap['cpu_capability']}); "
                    f"Faiss {cap['faiss']}")
    for absent in ("avx512_vnni", "amx_int8", "sha_ni", "fpu"):
        assert absent not in line
    assert format_capability({**cap, "freed_memory_kept": True}) == line + "; freed memory kept for reuse"
    assert format_capability({**cap, "freed_memory_kept": False}) == line + "; the allocator's own settings"


def test_injected_flags_win_over_the_file_and_none_present_is_said(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(FAKE_CPUINFO)
    assert capability(CPU, flags={"amx_int8", "avx512_vnni", "sse2"}, cpuinfo=str(fake))["flags"] == [
        "avx512_vnni", "amx_int8"]
    cap = capability(CPU, flags=set(), cpuinfo=str(tmp_path / "absent"))
    assert cap["flags"] == [] and cap["cpu"]  # no /proc/cpuinfo: platform's name stands in
    assert f"flags none of {', '.join(KERNEL_FLAGS)};" in format_capability(cap)


def test_precisions_are_what_the_hardware_computes_natively():
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN: auto stays fp32 whatever the flags")
    assert bench_precisions(None, CPU, {"avx2", "amx_bf16"}) == ("fp32", "bf16")
    assert bench_precisions(None, CPU, {"avx2", "avx512_bf16"}) == ("fp32", "bf16")
    assert bench_precisions(None, CPU, {"avx2", "avx512f", "avx512_vnni", "amx_int8"}) == ("fp32",)
    assert bench_precisions(None, CPU, set()) == ("fp32",)
    # asked for by name: fp32 first always (the reference), no duplicates
    assert bench_precisions(("bf16",), CPU, set()) == ("fp32", "bf16")
    assert bench_precisions(("bf16", "fp32", "bf16"), CPU, set()) == ("fp32", "bf16")
    with pytest.raises(ConfigError, match="fp16 autocast does not run on the CPU"):
        bench_precisions(("fp16",), CPU, set())


def test_precisions_option_and_its_mistakes():
    from jobs import bench

    parser = build_parser(bench)
    assert config_from(BenchConfig, parser.parse_args([])).precisions is None
    assert config_from(BenchConfig, parser.parse_args(["--precisions", "fp32,bf16"])).precisions == ("fp32", "bf16")
    with pytest.raises(ConfigError, match="precisions must be among fp32,bf16,fp16, got int8"):
        BenchConfig(precisions=("int8",))
    with pytest.raises(ConfigError):
        BenchConfig(precisions=())
    assert config_from(BenchConfig, parser.parse_args([])).reference_every == 2
    assert config_from(BenchConfig, parser.parse_args(["--reference-every", "3"])).reference_every == 3
    with pytest.raises(ConfigError, match="reference_every must be >= 1"):
        BenchConfig(reference_every=0)


def test_matmul_limits_per_precision_and_the_int8_rule():
    limits = matmul_limits(("fp32", "bf16"), 128, CPU, flags={"avx512_vnni"})
    assert list(limits) == ["fp32", "bf16", "int8"]
    assert limits["fp32"]["gflops"] > 0 and limits["bf16"]["gflops"] > 0
    int8 = limits["int8"]
    if "gops" in int8:
        assert int8["gops"] > 0 and int8["flags"] == ["avx512_vnni"]
    else:  # a torch whose _int_mm does not run on this CPU says so
        assert int8["skipped"].startswith("torch")
    assert int8_gops(128, CPU, flags={"avx2", "avx512_bf16"}) == {
        "skipped": "the CPU has no int8 dot products (no amx_int8 or avx512_vnni among its flags)"}
    assert "CPU-only" in int8_gops(128, torch.device("cuda"), flags={"amx_int8"})["skipped"]
    assert matmul_gflops(64, repeats=2, precision="bf16") > 0
    text = format_limits({"fp32": {"gflops": 70.4}, "bf16": {"gflops": 230.0}, "int8": {"gops": 300.2}}, 2048, 2)
    assert text == "matmul limits (2048² product, 2 threads): fp32 70 GFLOP/s, bf16 230 GFLOP/s, int8 300 GOP/s"
    assert format_limits({"fp32": {"gflops": 1.0}, "int8": {"skipped": "why"}}, 8, 1).endswith(
        "fp32 1 GFLOP/s, int8 skipped (why)")
