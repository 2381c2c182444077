"""Provenance (pipeline/provenance.py): what the fingerprint counts, and refusing to mix two records."""

from __future__ import annotations

import copy
import re

import pytest

from pipeline.errors import MismatchError, MixedProvenanceError, UserError
from pipeline.provenance import (
    NOT_FINGERPRINTED,
    carries,
    describe,
    diff_records,
    differences,
    differing_fields,
    fingerprint,
    is_random,
    require_same,
    same,
    stamp,
)


def record(**changes) -> dict:
    """A provenance record as extract writes it (every field outside the fingerprint present), then `changes`."""
    base = {
        "model": "vit_small_patch14_reg4_dinov2.lvd142m",
        "model_kwargs": {"depth": 2},
        "weights": {"source": "file", "path": "/models/dinov2_vits14_reg4.pth", "sha256": "ab" * 32, "seed": None},
        "input_size": [3, 224, 224], "resize_mode": "fixed", "interpolation": "bicubic", "crop_pct": 1.0,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dtype": "float16", "precision": "fp32",
        "quantize": None, "extras": [], "device": "cpu", "torch": "2.9.1", "timm": "1.0.20", "pipeline": "0.1.0",
        "fingerprint": "old", "compile": False,
    }
    base.update(changes)
    return base


# A different value for every field; the ones outside the fingerprint change only what is recorded.
OTHER_VALUES = {
    "model": "vit_base_patch14_dinov2.lvd142m", "model_kwargs": {"depth": 3}, "input_size": [3, 518, 518],
    "resize_mode": "dynamic", "interpolation": "bilinear", "crop_pct": 0.875, "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5], "dtype": "float32", "precision": "bf16", "quantize": "int8", "extras": ["gem"],
    "device": "cuda:0", "torch": "2.14.1", "timm": "1.0.99", "pipeline": "9.9.9", "fingerprint": "anything",
    "compile": True,
}


def test_not_fingerprinted_is_exactly_the_run_environment():
    # precision: `auto` resolves per machine and bf16 agrees with fp32 within parity (docs/FORMAT.md §6)
    # decode: the loader's CPU decode or the device's (--decode gpu) agree within the same criteria
    assert set(NOT_FINGERPRINTED) == {"device", "torch", "timm", "pipeline", "fingerprint", "compile",
                                      "precision", "precision_why", "decode"}
    assert set(OTHER_VALUES) == set(record()) - {"weights"}  # the table above covers every field


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_fingerprint_ignores_exactly_the_fields_outside_it(field):
    before, after = fingerprint(record()), fingerprint(record(**{field: OTHER_VALUES[field]}))
    if field in NOT_FINGERPRINTED:
        assert after == before, f"{field} must not change the fingerprint"
    else:
        assert after != before, f"{field} must change the fingerprint"


def test_fingerprint_counts_a_field_it_has_never_seen():
    assert fingerprint(record(new_setting=1)) != fingerprint(record())


def test_fingerprint_leaves_out_fields_absent_from_the_record():
    bare = {k: v for k, v in record().items() if k not in NOT_FINGERPRINTED}
    assert fingerprint(bare) == fingerprint(record())


def test_weights_count_by_content_not_by_where_they_were_read():
    base = fingerprint(record())
    moved = record(weights={"source": "hub", "path": "/cache/hub/model.safetensors", "sha256": "ab" * 32,
                            "seed": None})
    assert fingerprint(moved) == base  # same bytes from the hub cache or a path: one model
    assert fingerprint(record(weights={"source": "file", "path": None, "sha256": "ab" * 32})) == base  # no seed key
    assert fingerprint(record(weights={**record()["weights"], "sha256": "cd" * 32})) != base


def test_random_weights_count_by_seed():
    def random(seed: int) -> dict:
        return record(weights={"source": "random", "path": None, "sha256": "random", "seed": seed})

    assert fingerprint(random(0)) == fingerprint(random(0))
    assert fingerprint(random(0)) != fingerprint(random(1))
    assert fingerprint(random(0)) != fingerprint(record())


def test_fingerprint_is_16_hex_digits_independent_of_key_order():
    fp = fingerprint(record())
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert fingerprint(dict(reversed(list(record().items())))) == fp


def test_stamp_sets_the_fingerprint_and_leaves_the_record_alone():
    r = record()
    kept = copy.deepcopy(r)
    stamped = stamp(r)
    assert r == kept  # not modified in place
    assert stamped["fingerprint"] == fingerprint(r) and stamp(stamped) == stamped
    assert {k: v for k, v in stamped.items() if k != "fingerprint"} == {k: v for k, v in r.items()
                                                                        if k != "fingerprint"}


def test_require_same_accepts_one_fingerprint_whatever_the_run_environment():
    a = stamp(record())
    b = stamp(record(device="cuda:0", torch="2.14.1", timm="1.1", compile=True))
    assert same(a, b)
    require_same(a, b, "the index", "the queries")  # no error


def test_carries_matches_a_marker_or_provenance_against_one_fingerprint():
    a = stamp(record())
    marker = {"shard": "s0", "fingerprint": a["fingerprint"]}
    assert carries(a, a["fingerprint"]) and carries(marker, a["fingerprint"])
    assert not carries(marker, stamp(record(input_size=[3, 518, 518]))["fingerprint"])
    assert not carries({"shard": "s0"}, None)  # a record without a fingerprint matches none


def test_require_same_names_both_sides_and_the_differing_field():
    a = stamp(record())
    b = stamp(record(input_size=[3, 518, 518], device="cuda:0", torch="2.14.1"))
    with pytest.raises(MismatchError) as info:
        require_same(a, b, "the pool", "the reference")
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert msg.startswith(f"the pool ({describe(a)}) and the reference ({describe(b)}) were made differently")
    assert "input_size: [3, 224, 224] in the pool, [3, 518, 518] in the reference" in msg
    assert "device" not in msg and "torch" not in msg  # recorded, but not why they differ


def test_require_same_raises_the_error_class_asked_for():
    a, b = stamp(record()), stamp(record(model="other"))
    with pytest.raises(MixedProvenanceError, match=r"model: 'vit_small.*' in a, 'other' in b"):
        require_same(a, b, "a", "b", error=MixedProvenanceError)


def test_require_same_with_equal_fields_but_another_fingerprint():
    a = record(fingerprint="1111111111111111")
    b = record(fingerprint="2222222222222222")
    with pytest.raises(MismatchError, match="differences: fingerprint only"):
        require_same(a, b)


def test_differences_leave_out_the_run_environment_and_flatten_nested_fields():
    a = record()
    b = record(device="cuda:0", torch="2.14.1", timm="1.1", pipeline="0.2", compile=True, fingerprint="x",
               weights={**record()["weights"], "sha256": "cd" * 32}, dtype="float32")
    assert differences(a, b, "in A", "in B") == [
        "dtype: 'float16' in A, 'float32' in B",
        f"weights.sha256: {'ab' * 32!r} in A, {'cd' * 32!r} in B",
    ]
    assert differing_fields(a, b) == ["dtype", "weights"]
    assert differences(a, record(device="npu:0", torch="2.5.1")) == []


def test_diff_records():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": 5}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "f": 6}
    assert diff_records(old, new) == [
        "b.d: 3 in the existing output, 4 now",
        "e: 5 in the existing output, None now",
        "f: None in the existing output, 6 now",
    ]


def test_describe_and_is_random():
    assert describe(record()) == (f"model=vit_small_patch14_reg4_dinov2.lvd142m weights={'ab' * 6} "
                                  "input=[3, 224, 224] resize=fixed")
    rnd = record(weights={"source": "random", "path": None, "sha256": "random", "seed": 0})
    assert "weights=random" in describe(rnd)
    assert is_random(rnd) and not is_random(record()) and not is_random({})
