"""glibc's allocator kept from trimming (pipeline/extract/allocator.py): the setting, the user's choice, the effect."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.extract import allocator as memory
from pipeline.extract import backbone as backbone_module
from tests.conftest import tiny_config

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
REPO = Path(__file__).resolve().parents[2]


class FakeMallopt:
    """Records the calls; takes ctypes' argtypes/restype like the real function."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = 1

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


class FakeLibc:
    def __init__(self) -> None:
        self.mallopt = FakeMallopt()

    @property
    def calls(self) -> list[tuple[int, int]]:
        return self.mallopt.calls


@pytest.fixture
def fake_libc(monkeypatch):
    """A fresh process's state, and a libc that records mallopt calls instead of making them."""
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(memory.platform, "system", lambda: "Linux")
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in (*memory.USER_SETTINGS, "LD_PRELOAD", memory.OPT_OUT):
        monkeypatch.delenv(name, raising=False)
    return libc


def test_sets_the_mmap_and_trim_thresholds_once(fake_libc):
    assert memory.keep_freed_memory() is True
    assert fake_libc.calls == [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, -1)]
    assert (memory.M_MMAP_THRESHOLD, memory.M_TRIM_THRESHOLD) == (-3, -1)  # malloc.h
    assert memory.keep_freed_memory() is True
    assert len(fake_libc.calls) == 2  # once per process


def test_a_refused_setting_is_reported_not_in_force(fake_libc):
    fake_libc.mallopt.result = 0  # glibc refuses a value (e.g. a threshold above its ceiling)
    assert memory.keep_freed_memory() is False
    assert memory.keep_freed_memory() is False and len(fake_libc.calls) == 1  # not retried


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "131072"), ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
                                         ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
                                         ("DINOCURATE_KEEP_FREED_MEMORY", "0")])
def test_the_users_own_allocator_choice_is_left_alone(fake_libc, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert memory.keep_freed_memory() is False
    assert fake_libc.calls == []


def test_not_glibc_nothing_is_called(fake_libc, monkeypatch):
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows
    assert memory.keep_freed_memory() is False
    assert fake_libc.calls == []


def test_a_cpu_backbone_asks_for_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(backbone_module, "keep_freed_memory", lambda: calls.append(1) or True)
    backbone_module.create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu"))
    assert calls == [1]


FAULTS = """
import json, resource, sys, torch
sys.path.insert(0, {repo!r})
from pipeline.extract import allocator
from pipeline.extract.backbone import create_backbone
from pipeline.extract.config import ExtractConfig
torch.set_num_threads(1)
cfg = ExtractConfig(out="unused", images="unused", model="vit_small_patch14_reg4_dinov2.lvd142m", weights="random",
                    model_kwargs=(("depth", 1),), resolution=224, precision="fp32", progress=False)
backbone = create_backbone(cfg, torch.device("cpu"))
x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    backbone(x)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": allocator._applied, "faults": faults}}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_the_next_pass_reuses_the_last_ones_pages_instead_of_faulting_them_in():
    """Ten forward passes of a 1-block ViT-S/14 (16 images at 224 px: activations of 2-20 MB) in a fresh
    process, through the real `create_backbone`: with glibc's defaults (the opt-out set) most passes fault
    thousands of pages in again (here 6-23k; its adaptive threshold spares one now and then); kept, the passes
    after the first two fault next to none (a pass may still grow the heap once in a while: 0-1.6k seen)."""
    script = FAULTS.format(repo=str(REPO))
    runs = {}
    for mode, keep in (("default", "0"), ("keep", "1")):
        env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", memory.OPT_OUT: keep}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                             check=True, timeout=300)
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["keep"]["applied"] is True and runs["default"]["applied"] is False
    default, kept = runs["default"]["faults"][2:], runs["keep"]["faults"][2:]
    assert sorted(default)[len(default) // 2] > 2000, runs  # ~8 MB or more faulted in again on most passes
    assert sorted(kept)[len(kept) // 2] < 100, runs  # most passes fault nothing in
    assert sum(kept) < sum(default) / 10, runs
