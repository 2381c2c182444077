"""What the machine offers: CPU model, kernel flags, torch's and Faiss's view, matmul limits per precision.

The CPU's flags are read once from the kernel (`pipeline.extract.device.cpu_flags`) and passed down; every
function here takes them as `flags: set[str] | None` (None: read /proc/cpuinfo), so a test can stand in any CPU.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from pipeline.bench.config import BENCH_PRECISIONS
from pipeline.errors import ConfigError
from pipeline.extract.device import cpu_flags, resolve_precision

# The flags that decide how fast a ViT runs on a CPU, in the order the capability line lists them.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
INT8_FLAGS = ("amx_int8", "avx512_vnni")  # int8 dot products in hardware
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_model_name(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The kernel's "model name" of the first CPU (None where there is no /proc/cpuinfo or no such line)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def cores() -> int:
    """CPUs this process may run on (its affinity, which containers and taskset narrow), not the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def faiss_build() -> str | None:
    """Faiss's compile options (its SIMD level: AVX2, AVX512, ...); None when Faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return str(faiss.get_compile_options()).strip()


def capability(device: torch.device, flags: set[str] | None = None, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The machine as the bench sees it: CPU model, cores, torch threads, which of KERNEL_FLAGS the CPU has,
    torch's oneDNN and CPU capability, Faiss's build, and the accelerator's name on CUDA."""
    flags = cpu_flags(cpuinfo) if flags is None else flags
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return {
        "cpu": cpu_model_name(cpuinfo) or platform.processor() or platform.machine(),
        "cores": cores(),
        "torch_threads": torch.get_num_threads(),
        "flags": [f for f in KERNEL_FLAGS if f in flags],
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cpu_capability": get_capability() if get_capability else None,
        "faiss": faiss_build(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }


def format_capability(cap: dict) -> str:
    """One line: `machine: <CPU>, N cores, torch T threads; flags ...; torch ...; Faiss ...[; device ...]`, and on
    a CPU whether the forward passes' freed memory is kept for reuse (extract/allocator.py)."""
    flags = " ".join(cap["flags"]) if cap["flags"] else f"none of {', '.join(KERNEL_FLAGS)}"
    torch_view = f"oneDNN {'yes' if cap['mkldnn'] else 'no'}"
    if cap["cpu_capability"]:
        torch_view += f", CPU capability {cap['cpu_capability']}"
    line = (f"machine: {cap['cpu']}, {cap['cores']} cores, torch {cap['torch_threads']} threads; flags {flags}; "
            f"torch {cap['torch']} ({torch_view}); Faiss {cap['faiss'] or 'not installed'}")
    if cap["device_name"]:
        line += f"; device {cap['device']} = {cap['device_name']}"
    kept = cap.get("freed_memory_kept")  # set by run_bench once a CPU backbone exists (extract/allocator.py)
    if kept is not None:
        line += "; freed memory kept for reuse" if kept else "; the allocator's own settings"
    return line


def bench_precisions(requested: tuple[str, ...] | None, device: torch.device,
                     flags: set[str] | None = None) -> tuple[str, ...]:
    """The precisions to measure, fp32 first (the reference of the naive loop, the fast paths, and
    bench.json's top-level keys): `requested` after fp32, or with None every precision the hardware computes
    natively, i.e. bf16 where `--precision auto` resolves to it."""
    if requested is None:
        requested = (resolve_precision("auto", device, flags)[0],)
    unknown = [p for p in requested if p not in BENCH_PRECISIONS]
    if unknown:
        raise ConfigError(f"precisions must be among {', '.join(BENCH_PRECISIONS)}, got {', '.join(unknown)}")
    if device.type == "cpu" and "fp16" in requested:
        raise ConfigError("fp16 autocast does not run on the CPU; bench fp32,bf16 there")
    return tuple(dict.fromkeys(("fp32", *requested)))


def matmul_gflops(n: int = 2048, repeats: int = 10, precision: str = "fp32",
                  device: torch.device | None = None) -> float:
    """The limit of one precision on these threads: GFLOP/s of an n×n matrix product (after a warm-up),
    in that dtype on `device` (default: the CPU)."""
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device).to(_DTYPES[precision])
    b = torch.randn(n, n, device=device).to(_DTYPES[precision])
    return 2 * n**3 / _seconds_per_call(lambda: a @ b, device, repeats) / 1e9


def int8_gops(n: int, device: torch.device, flags: set[str] | None = None, repeats: int = 10) -> dict:
    """{"gops": GOP/s of an n×n int8 product (`torch._int_mm`, int32 out)} where the CPU has int8 dot products
    (amx_int8 or avx512_vnni), else {"skipped": why}: the int8 fast path's limit."""
    if device.type != "cpu":
        return {"skipped": f"the int8 fast path is CPU-only, the bench runs on {device.type}"}
    flags = cpu_flags() if flags is None else flags
    present = [f for f in INT8_FLAGS if f in flags]
    if not present:
        return {"skipped": "the CPU has no int8 dot products (no amx_int8 or avx512_vnni among its flags)"}
    int_mm = getattr(torch, "_int_mm", None)
    if int_mm is None:
        return {"skipped": f"torch {torch.__version__} has no torch._int_mm"}
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
    try:
        seconds = _seconds_per_call(lambda: int_mm(a, b), device, repeats)
    except RuntimeError as exc:
        return {"skipped": f"torch._int_mm does not run on this CPU: {str(exc).splitlines()[0][:200]}"}
    return {"gops": 2 * n**3 / seconds / 1e9, "flags": present}


def matmul_limits(precisions: tuple[str, ...], n: int, device: torch.device,
                  flags: set[str] | None = None) -> dict[str, dict]:
    """{precision: {"gflops": ...}} for each measured precision, and "int8": {"gops": ...} or {"skipped": why}."""
    limits: dict[str, dict] = {p: {"gflops": matmul_gflops(n, precision=p, device=device)} for p in precisions}
    limits["int8"] = int8_gops(n, device, flags)
    return limits


def format_limits(limits: dict[str, dict], n: int, threads: int) -> str:
    """`matmul limits (2048² product, 2 threads): fp32 70 GFLOP/s, bf16 230 GFLOP/s, int8 300 GOP/s`."""
    parts = []
    for name, limit in limits.items():
        if "gflops" in limit:
            parts.append(f"{name} {limit['gflops']:.0f} GFLOP/s")
        elif "gops" in limit:
            parts.append(f"{name} {limit['gops']:.0f} GOP/s")
        else:
            parts.append(f"{name} skipped ({limit['skipped']})")
    return f"matmul limits ({n}² product, {threads} threads): " + ", ".join(parts)


def _seconds_per_call(call, device: torch.device, repeats: int) -> float:
    for _ in range(2):
        call()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def sync(device: torch.device) -> None:
    """Wait for the accelerator's queued work (timings end when the work does); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)
