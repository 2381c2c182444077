"""`--precision auto` decides from what the hardware reports, and records the choice and why (issue 13)."""

from __future__ import annotations

import torch

from pipeline.extract.backbone import create_backbone
from pipeline.extract.device import cpu_flags, resolve_precision
from pipeline.provenance import fingerprint
from tests.conftest import tiny_config

CPU = torch.device("cpu")


def test_auto_is_bf16_where_the_cpu_computes_it_natively():
    assert resolve_precision("auto", CPU, {"avx2", "avx512f", "amx_bf16", "amx_tile"})[0] == "bf16"
    precision, why = resolve_precision("auto", CPU, {"avx2", "avx512_bf16"})
    assert precision == "bf16" and "avx512_bf16" in why


def test_auto_is_fp32_without_native_bf16():
    precision, why = resolve_precision("auto", CPU, {"avx2", "avx512f", "avx512_vnni"})  # VNNI is int8 only
    assert precision == "fp32" and "no native bf16" in why
    assert resolve_precision("auto", CPU, set())[0] == "fp32"


def test_a_precision_asked_for_by_name_is_kept():
    assert resolve_precision("fp32", CPU, {"amx_bf16"}) == ("fp32", "--precision fp32 given")
    assert resolve_precision("bf16", CPU, set())[0] == "bf16"


def test_cpu_flags_come_from_the_kernel(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(fake)) == {"fpu", "sse", "avx2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == set()


def test_the_choice_and_why_are_recorded_but_do_not_split_a_root(tmp_path, monkeypatch):
    from pipeline.extract import backbone as backbone_mod

    monkeypatch.setattr(backbone_mod, "resolve_precision",
                        lambda requested, device: ("bf16", "test: native bf16") if requested == "auto"
                        else (requested, "given"))
    auto = create_backbone(tiny_config(tmp_path, images="x", precision="auto"), CPU).provenance()
    fp32 = create_backbone(tiny_config(tmp_path, images="x", precision="fp32"), CPU).provenance()
    assert (auto["precision"], auto["precision_why"]) == ("bf16", "test: native bf16")
    assert fp32["precision"] == "fp32"
    # bf16 autocast and fp32 agree within parity: the same root may hold both (a resumed run on another CPU)
    assert auto["fingerprint"] == fp32["fingerprint"] == fingerprint(auto)


def test_bf16_autocast_features_are_close_to_fp32(tmp_path):
    images = torch.randint(0, 255, (4, 3, 56, 56), dtype=torch.uint8)
    a = create_backbone(tiny_config(tmp_path, images="x", precision="bf16"), CPU)(images)["cls"]
    b = create_backbone(tiny_config(tmp_path, images="x", precision="fp32"), CPU)(images)["cls"]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cos.min() > 0.999 and not torch.equal(a, b)
