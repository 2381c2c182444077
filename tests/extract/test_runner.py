"""run_extract (pipeline/extract/runner.py): timm parity, splitting, bad data, damage, resume, provenance."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_model_data_config
from webdataset import TarWriter

from pipeline.errors import ConfigMismatchError
from pipeline.extract.config import EVAL_CROP_PCT
from pipeline.extract.runner import run_extract
from pipeline.io.schema import read_provenance
from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, jpeg_bytes, make_image, tiny_config, write_shards

REPO = Path(__file__).resolve().parents[2]


def read_features(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "features").sort_values(["shard", "index"]).reset_index(drop=True)


def read_failures(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "failures")


def stack(col: pd.Series) -> np.ndarray:
    return np.stack(col.to_numpy()).astype(np.float64)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A seeded tiny DINOv2-reg4 ViT saved as .safetensors (so pipeline and reference share weights)."""
    torch.manual_seed(0)
    model = timm.create_model(TINY_MODEL, pretrained=False, img_size=TINY_RES, **dict(TINY_KWARGS)).eval()
    with torch.no_grad():  # random init leaves LayerScale at 1e-5: make the blocks matter
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(0.5)
            if name in ("cls_token", "reg_token"):
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def reference_features(model: torch.nn.Module, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """The user's way: the model's own timm eval transform at DINOv2's evaluation crop (resize to 64, centre
    crop 56, as 256 → 224) on a PIL image, then forward_features."""
    data_cfg = resolve_model_data_config(model)
    data_cfg["input_size"] = (3, TINY_RES, TINY_RES)
    data_cfg["crop_pct"] = EVAL_CROP_PCT
    transform = create_transform(**data_cfg, is_training=False)
    with torch.no_grad():
        tokens = model.forward_features(torch.stack([transform(im) for im in images]))
    return tokens[:, 0].numpy(), tokens[:, model.num_prefix_tokens:].mean(1).numpy()


@pytest.mark.parametrize("dtype,bound", [("float32", 0.99999), ("float16", 0.9995)])
def test_features_equal_direct_timm_forward(tmp_path, tiny_weights, dtype, bound):
    path, model = tiny_weights
    shards, keys = write_shards(tmp_path / "shards", 2, 5)
    stats = run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), weights=str(path), dtype=dtype))
    assert stats.images == 10 and stats.failures == 0
    df = read_features(tmp_path / "out")
    assert list(df.key) == keys
    images = [Image.open(io.BytesIO(jpeg_bytes(make_image(i, (64 + (i % 5) * 8, 48))))).convert("RGB")
              for i in range(10)]
    ref_cls, ref_mean = reference_features(model, images)
    cls, mean = stack(df.cls), stack(df.patch_mean)
    assert cls.shape == (10, 64) and df.cls[0].dtype == np.dtype(dtype)
    assert cosine_rows(cls, ref_cls).min() >= bound
    assert cosine_rows(mean, ref_mean).min() >= bound
    prov = read_provenance(next((tmp_path / "out" / "features").glob("*.parquet")))
    assert prov["weights"]["source"] == "file" and len(prov["weights"]["sha256"]) == 64
    assert prov["input_size"] == [3, TINY_RES, TINY_RES] and prov["dtype"] == dtype


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2])
def test_every_key_exactly_once_across_workers_and_ranks(tmp_path, workers, world_size):
    shards, keys = write_shards(tmp_path / "shards", 3, 5)
    for rank in range(world_size):
        run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), workers=workers, rank=rank,
                                world_size=world_size, batch_size=3))
    df = read_features(tmp_path / "out")
    assert sorted(df.key) == sorted(keys)
    assert df.key.is_unique
    assert sorted(p.stem for p in (tmp_path / "out" / "_done").glob("*.json")) == [Path(s).stem for s in shards]


def _bad_shard(path: Path) -> dict[str, str]:
    """One shard with good samples and every kind of bad one; returns {key: expected failure reason}."""
    good = jpeg_bytes(make_image(1))
    with TarWriter(str(path), encoder=False) as sink:
        sink.write({"__key__": "good_a", "jpg": good})
        sink.write({"__key__": "truncated", "jpg": good[: len(good) // 2]})
        sink.write({"__key__": "not_an_image", "jpg": b"this is plain text, not a JPEG"})
        sink.write({"__key__": "no_image", "txt": b"a caption without its image"})
        sink.write({"__key__": "zero_bytes", "jpg": b""})
        sink.write({"__key__": "bomb", "png": _png(make_image(2, (300, 300)))})
        sink.write({"__key__": "good_b", "png": _png(make_image(3))})
    return {"truncated": "OSError", "not_an_image": "UnidentifiedImageError", "no_image": "NoImage",
            "zero_bytes": "EmptyImage", "bomb": "DecompressionBombError"}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_samples_become_failure_rows_and_job_exits_zero(tmp_path):
    expected = _bad_shard(tmp_path / "bad-000000.tar")
    good_shards, good_keys = write_shards(tmp_path, 1, 3, prefix="good")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.extract", "--shards", str(tmp_path / "bad-000000.tar"), *good_shards,
           "--out", str(out), "--weights", "random", "--model", TINY_MODEL, "--resolution", str(TINY_RES),
           "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS), "--max-pixels", "20000",
           "--workers", "1", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "5 failures" in proc.stdout
    fails = read_failures(out)
    assert dict(zip(fails.key, fails.reason)) == expected
    assert set(fails.stage) == {"decode", "read"}
    assert (fails[fails.key == "no_image"].stage == "read").all()
    df = read_features(out)
    assert sorted(df.key) == sorted(["good_a", "good_b", *good_keys])
    marker = json.loads((out / "_done" / "bad-000000.json").read_text())
    assert marker["samples"] == 7 and marker["rows"] == 2 and marker["failures"] == 5
    stats = json.loads((out / "stats.json").read_text())
    assert stats["failures"] == 5 and stats["failures_by_reason"]["NoImage"] == 1


def test_tar_cut_in_the_middle_keeps_samples_before_the_cut(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 2, 8)
    data = Path(shards[0]).read_bytes()
    with tarfile.open(shards[0]) as tf:
        members = tf.getmembers()
    cut_member = members[9]  # sample 4's jpg (members alternate cls/jpg per sample)
    Path(shards[0]).write_bytes(data[: cut_member.offset_data + cut_member.size // 2])
    stats = run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    assert stats.failed == [] and stats.written == 2
    df = read_features(tmp_path / "out")
    first = df[df.shard == "train-000000"]
    survivors = sorted(first.key)
    assert survivors == keys[: len(survivors)] and 3 <= len(survivors) <= 5
    assert sorted(df[df.shard == "train-000001"].key) == keys[8:]
    marker = json.loads((tmp_path / "out" / "_done" / "train-000000.json").read_text())
    assert marker["damage"] and "ReadError" in marker["damage"]
    fails = read_failures(tmp_path / "out")
    assert (fails.reason == "DamagedShard").sum() == 1
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["damaged_shards"] == {
        "train-000000": marker["damage"]}


def test_missing_local_shard_is_left_undone_and_alone_is_refused_up_front(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 1, 2)
    gone = str(tmp_path / "gone-000000.tar")
    stats = run_extract(tiny_config(tmp_path / "out", shards=(*shards, gone)))
    assert stats.failed == ["gone-000000"] and stats.written == 1
    assert sorted(read_features(tmp_path / "out").key) == keys
    with pytest.raises(FileNotFoundError, match="gone-000000.tar"):
        run_extract(tiny_config(tmp_path / "out2", shards=(gone,)))


def test_unreadable_shard_is_left_undone_and_others_go_on(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 2, 3)
    failing = "pipe:cat " + str(tmp_path / "nope.tar")  # the command fails: a read error, not damage
    stats = run_extract(tiny_config(tmp_path / "out", shards=(failing, *shards)))
    assert stats.written == 2 and stats.failed == ["nope"]
    assert not (tmp_path / "out" / "_done" / "nope.json").exists()
    assert sorted(read_features(tmp_path / "out").key) == keys


def test_crash_after_k_shards_then_rerun_resumes_without_recomputing(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 4, 3)
    full = tmp_path / "full"
    run_extract(tiny_config(full, shards=tuple(shards), workers=1))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="crash"):
        run_extract(tiny_config(out, shards=tuple(shards), workers=1, crash_after_shards=2))
    done = sorted((out / "_done").glob("*.json"))
    assert len(done) == 2
    before = {p.name: p.stat().st_mtime_ns for p in [*done, *(out / "features").glob("*.parquet")]}
    stats = run_extract(tiny_config(out, shards=tuple(shards), workers=1))
    assert stats.skipped == 2 and stats.written == 2
    for name, mtime in before.items():
        path = (out / "_done" / name) if name.endswith(".json") else (out / "features" / name)
        assert path.stat().st_mtime_ns == mtime, f"{name} was rewritten"
    a, b = read_features(full), read_features(out)
    assert list(a.key) == list(b.key) and list(b.key) == keys
    np.testing.assert_array_equal(stack(a.cls), stack(b.cls))
    assert not list(out.rglob("*.tmp"))


def test_rerun_with_other_preprocessing_is_refused_naming_the_difference(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 2)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    with pytest.raises(ConfigMismatchError, match="input_size"):
        run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), resolution=28))
    with pytest.raises(ConfigMismatchError, match="model_kwargs"):
        run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), model_kwargs=(("depth", 1),)))


def test_random_weights_are_recorded_everywhere(tmp_path):
    shards, _ = write_shards(tmp_path / "shards", 1, 2)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    prov = read_provenance(tmp_path / "out" / "features" / "train-000000.parquet")
    assert prov["weights"] == {"source": "random", "path": None, "sha256": "random", "seed": 0}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["provenance"]["weights"]["sha256"] == "random"
    assert config["provenance"]["fingerprint"] == prov["fingerprint"]


def test_image_folder_input_keys_are_relative_paths(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    make_image(0).save(root / "x.jpg")
    make_image(1).save(root / "a" / "y.png")
    make_image(2).save(root / "a" / "b" / "z.webp")
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    stats = run_extract(tiny_config(tmp_path / "out", images=str(root), folder_shard_size=2))
    assert stats.images == 3 and stats.failures == 1
    df = read_features(tmp_path / "out")
    assert sorted(df.key) == ["a/b/z.webp", "a/y.png", "x.jpg"]
    assert list(read_failures(tmp_path / "out").key) == ["a/broken.jpg"]
    assert sorted(p.stem for p in (tmp_path / "out" / "features").glob("*.parquet")) == ["folder-000000",
                                                                                        "folder-000001"]


def test_dynamic_resize_keeps_aspect_and_matches_dynamic_model(tmp_path, tiny_weights):
    path, _ = tiny_weights
    root = tmp_path / "photos"
    root.mkdir()
    sizes = {"wide.png": (112, 56), "tall.png": (40, 90), "square.png": (60, 60), "wide2.png": (120, 60)}
    for i, (name, size) in enumerate(sizes.items()):
        make_image(i, size).save(root / name)
    run_extract(tiny_config(tmp_path / "out", images=str(root), weights=str(path), resize_mode="dynamic",
                            dtype="float32"))
    df = read_features(tmp_path / "out").set_index("key")
    model = timm.create_model(TINY_MODEL, pretrained=False, img_size=TINY_RES, dynamic_img_size=True,
                              pretrained_cfg_overlay=dict(file=str(path)), **dict(TINY_KWARGS)).eval()
    from timm.models import load_checkpoint

    load_checkpoint(model, str(path))
    norm = create_transform(**{**resolve_model_data_config(model), "input_size": (3, TINY_RES, TINY_RES)},
                            is_training=False).transforms[-1]
    expect_shapes = {"wide.png": (56, 28), "tall.png": (28, 56), "square.png": (56, 56), "wide2.png": (56, 28)}
    for name, (w, h) in expect_shapes.items():
        img = Image.open(root / name).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        x = norm(torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255)[None]
        with torch.no_grad():
            ref = model.forward_features(x)[0, 0].numpy()
        assert cosine_rows(np.asarray(df.loc[name, "cls"], np.float64)[None], ref[None].astype(np.float64))[0] > 0.99999


def test_shard_parts_give_every_worker_work():
    from pipeline.extract.runner import shard_parts

    assert [shard_parts(n, 2) for n in (0, 1, 2, 5)] == [1, 2, 1, 1]
    assert [shard_parts(n, 8) for n in (1, 3, 7, 8, 20)] == [8, 3, 2, 1, 1]
    assert shard_parts(1, 0) == 1 and shard_parts(1, 1) == 1


@pytest.mark.parametrize("workers", [2, 3])
def test_one_shard_split_across_workers_equals_one_reader(tmp_path, workers):
    """A shard with fewer shards than workers is split into interleaved parts, one per worker; the written
    shard (rows in index order, failure rows, marker) is exactly what one reader writes."""
    bad = tmp_path / "bad.tar"
    expected = _bad_shard(bad)  # 7 samples, 5 of them bad; then 6 good ones, in one shard
    extra = tmp_path / "tail.tar"
    with TarWriter(str(extra), encoder=False) as sink:
        for i in range(6):
            sink.write({"__key__": f"tail_{i}", "jpg": jpeg_bytes(make_image(10 + i))})
    combined = tmp_path / "bad-000000.tar"
    with tarfile.open(combined, "w") as out, tarfile.open(bad) as a, tarfile.open(extra) as b:
        for tf in (a, b):
            for m in tf.getmembers():
                out.addfile(m, tf.extractfile(m))
    runs = {}
    for w in (0, workers):
        out = tmp_path / f"out{w}"
        stats = run_extract(tiny_config(out, shards=(str(combined),), workers=w, batch_size=2, max_pixels=20000))
        assert stats.written == 1 and stats.images == 8 and stats.failures == 5
        runs[w] = (read_features(out), read_failures(out),
                   json.loads((out / "_done" / "bad-000000.json").read_text()))
    (df0, f0, m0), (df1, f1, m1) = runs[0], runs[workers]
    assert list(df1.key) == list(df0.key) == ["good_a", "good_b", *[f"tail_{i}" for i in range(6)]]
    assert list(df1["index"]) == list(df0["index"]) == [0, 6, 7, 8, 9, 10, 11, 12]
    np.testing.assert_allclose(stack(df1.cls), stack(df0.cls), rtol=0, atol=1e-6)
    assert f1.to_dict("records") == f0.to_dict("records") and dict(zip(f1.key, f1.reason)) == expected
    assert list(f1["index"]) == sorted(f1["index"])
    for k in ("samples", "rows", "failures", "failures_by_reason", "damage"):
        assert m1[k] == m0[k], k
    assert (m1["samples"], m1["rows"], m1["failures"]) == (13, 8, 5)


def test_cut_shard_split_across_workers_records_the_damage_once(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 1, 8)
    data = Path(shards[0]).read_bytes()
    with tarfile.open(shards[0]) as tf:
        cut_member = tf.getmembers()[9]
    Path(shards[0]).write_bytes(data[: cut_member.offset_data + cut_member.size // 2])
    one = run_extract(tiny_config(tmp_path / "one", shards=tuple(shards)))
    two = run_extract(tiny_config(tmp_path / "two", shards=tuple(shards), workers=2))
    assert one.images == two.images and two.damaged == ["train-000000"] and two.failed == []
    assert sorted(read_features(tmp_path / "two").key) == sorted(read_features(tmp_path / "one").key)
    fails = read_failures(tmp_path / "two")
    assert (fails.reason == "DamagedShard").sum() == 1 and len(fails) == len(read_failures(tmp_path / "one"))
    m1, m2 = (json.loads((tmp_path / d / "_done" / "train-000000.json").read_text()) for d in ("one", "two"))
    assert m2["samples"] == m1["samples"] and m2["damage"] == m1["damage"]


def test_folder_of_one_shard_uses_every_worker(tmp_path, monkeypatch):
    """A small folder is one shard; with 2 workers both decode (each its own interleaved part)."""
    import pipeline.extract.loader as loader_module
    from pipeline.extract.backbone import create_backbone
    from pipeline.io.shards import create_folder_shards

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(9):
        make_image(i).save(root / f"p{i}.jpg")
    seen_parts = []
    original = loader_module.ShardEnd

    def spy(*args, **kwargs):
        seen_parts.append(kwargs.get("part", 0))
        return original(*args, **kwargs)

    monkeypatch.setattr(loader_module, "ShardEnd", spy)  # only the main-process run below records (workers=0)
    preprocess = create_backbone(tiny_config(tmp_path / "x", images=str(root)), torch.device("cpu")).preprocess
    ds = loader_module.ExtractDataset(create_folder_shards(str(root), 1000), preprocess, 4, 10**9, parts=2)
    batches = list(ds)
    assert sorted(seen_parts) == [0, 1]
    metas = [m for b in batches for m in b.metas]
    assert sorted(m.index for m in metas) == list(range(9))
    ends = [e for b in batches for e in b.ended]
    assert [(e.part, e.parts, e.samples) for e in ends] == [(0, 2, 5), (1, 2, 4)]
    stats = run_extract(tiny_config(tmp_path / "out", images=str(root), workers=2))
    assert stats.images == 9 and stats.written == 1
    assert sorted(read_features(tmp_path / "out").key) == sorted(f"p{i}.jpg" for i in range(9))


def test_stats_say_where_the_wall_time_went(tmp_path, monkeypatch):
    """loader_wait_seconds counts the model's waits for batches after the first; a loader made slow on purpose
    shows up there and in the summary, a fast one hardly."""
    import pipeline.extract.loader as loader_module

    shards, _ = write_shards(tmp_path / "shards", 2, 6)
    fast = run_extract(tiny_config(tmp_path / "fast", shards=tuple(shards), batch_size=2))
    original = loader_module.ExtractDataset.process

    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loader_module.ExtractDataset, "process", slow)
    slowed = run_extract(tiny_config(tmp_path / "slow", shards=tuple(shards), batch_size=2))
    for st in (fast, slowed):
        assert st.images == 12 and st.forward_seconds > 0 and st.first_batch_seconds > 0
        assert st.first_batch_seconds + st.loader_wait_seconds + st.forward_seconds <= st.seconds
    assert slowed.loader_wait_seconds >= 5 * 2 * 0.05 * 0.9  # 5 batches after the first, 2 images of 50 ms each
    assert slowed.first_batch_seconds >= 2 * 0.05 * 0.9
    assert slowed.loader_wait_share > 0.3 and "waited for the loader" in slowed.summary()
    recorded = json.loads((tmp_path / "slow" / "stats.json").read_text())["last_run"]
    assert recorded["loader_wait_seconds"] == pytest.approx(slowed.loader_wait_seconds)


def test_the_workers_cpu_time_is_counted_and_sleep_is_not(tmp_path, monkeypatch):
    """loader_cpu_seconds: the workers' own CPU time (busy work counts, waiting does not), 0 without workers."""
    import pipeline.extract.loader as loader_module

    shards, _ = write_shards(tmp_path / "shards", 2, 6)
    none = run_extract(tiny_config(tmp_path / "none", shards=tuple(shards), batch_size=2, workers=0))
    assert none.images == 12 and none.loader_cpu_seconds == 0 and "workers' CPU" not in none.summary()
    original = loader_module.ExtractDataset.process

    def busy(self, *args, **kwargs):
        end = time.process_time() + 0.03
        while time.process_time() < end:
            pass
        return original(self, *args, **kwargs)

    def idle(self, *args, **kwargs):
        time.sleep(0.03)
        return original(self, *args, **kwargs)

    runs = {}
    for name, process in (("busy", busy), ("idle", idle)):
        monkeypatch.setattr(loader_module.ExtractDataset, "process", process)
        runs[name] = run_extract(tiny_config(tmp_path / name, shards=tuple(shards), batch_size=2, workers=2))
        assert runs[name].images == 12
    assert runs["busy"].loader_cpu_seconds >= 12 * 0.03  # every image's busy work, in whichever worker
    assert runs["idle"].loader_cpu_seconds < 12 * 0.03 / 2  # the sleeps are not CPU
    assert runs["idle"].loader_cpu_seconds > 0
    per_image = runs["busy"].loader_cpu_seconds / 12 * 1e3
    assert f"its workers' CPU {per_image:.1f} ms per image" in runs["busy"].summary()
    recorded = json.loads((tmp_path / "busy" / "stats.json").read_text())["last_run"]
    assert recorded["loader_cpu_seconds"] == pytest.approx(runs["busy"].loader_cpu_seconds)


def _count_forwards(monkeypatch) -> list[int]:
    """Batch sizes of every forward pass of the Backbone from now on."""
    from pipeline.extract.backbone import Backbone

    sizes: list[int] = []
    original = Backbone.__call__

    def counted(self, images):
        sizes.append(int(images.shape[0]))
        return original(self, images)

    monkeypatch.setattr(Backbone, "__call__", counted)
    return sizes


def test_the_schema_comes_from_the_first_batch_without_a_forward_of_its_own(tmp_path, monkeypatch):
    """One forward pass per batch and no other (the widths come from the first batch's features); the files
    are the same as those of a run that knew the widths beforehand (a dry forward, as before)."""
    import pyarrow.parquet as pq

    shards, keys = write_shards(tmp_path / "shards", 2, 5)
    sizes = _count_forwards(monkeypatch)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards), batch_size=2, extras=("registers", "gem")))
    assert sizes == [2, 2, 2, 2, 2]  # 10 images, batch 2, one shard's rest batched with the next one's
    df = read_features(tmp_path / "out")
    assert sorted(df.key) == sorted(keys)
    d = dict(TINY_KWARGS)["embed_dim"]
    assert {c: len(df[c].iloc[0]) for c in ("cls", "patch_mean", "patch_gem")} == {"cls": d, "patch_mean": d,
                                                                                    "patch_gem": d}
    assert len(df["registers"].iloc[0]) == 4 * d
    schemas = {pq.read_schema(p).remove_metadata() for p in (tmp_path / "out" / "features").glob("*.parquet")}
    assert len(schemas) == 1


def test_a_first_shard_without_images_gets_the_schema_from_a_dry_forward(tmp_path, monkeypatch):
    """Every sample of the first shard fails, so its (empty) feature file is written before any batch: one dry
    forward pass of one image gives the widths, and its schema is the later shards' schema exactly."""
    import pyarrow.parquet as pq

    bad = tmp_path / "shards" / "a-000000.tar"
    bad.parent.mkdir(parents=True)
    with TarWriter(str(bad), encoder=False) as sink:
        sink.write({"__key__": "text", "jpg": b"not an image"})
        sink.write({"__key__": "empty", "jpg": b""})
    good, keys = write_shards(tmp_path / "shards", 1, 3, prefix="b")
    sizes = _count_forwards(monkeypatch)
    stats = run_extract(tiny_config(tmp_path / "out", shards=(str(bad), *good), batch_size=2))
    assert sizes == [1, 2, 1]  # the dry pass, then the good shard's 3 images
    assert stats.images == 3 and stats.failures == 2 and stats.written == 2
    files = {p.stem: p for p in (tmp_path / "out" / "features").glob("*.parquet")}
    empty, full = pq.read_table(files["a-000000"]), pq.read_table(files["b-000000"])
    assert empty.num_rows == 0 and full.num_rows == 3
    assert empty.schema.equals(full.schema, check_metadata=True)



def test_the_writer_thread_imports_nothing_heavy(tmp_path):
    """pyarrow imports pandas (~0.3 s of CPU) on its first `pa.array` of a list: a run used to do that in its
    writer thread at the first shard, during a forward pass; it now happens before the first batch."""
    shards, _ = write_shards(tmp_path / "shards", 2, 3)
    code = (
        "import json, sys\n"
        "import pipeline.extract.runner as runner\n"
        "from pipeline.extract.config import ExtractConfig\n"
        "new = []\n"
        "original = runner._write_shard\n"
        "def write(*args, **kwargs):\n"
        "    before = set(sys.modules)\n"
        "    original(*args, **kwargs)\n"
        "    new.extend(sorted(set(sys.modules) - before))\n"
        "runner._write_shard = write\n"
        f"cfg = ExtractConfig(out={str(tmp_path / 'out')!r}, shards={tuple(shards)!r}, model={TINY_MODEL!r}, "
        f"weights='random', model_kwargs={TINY_KWARGS!r}, resolution={TINY_RES}, batch_size=2, workers=0, "
        "progress=False, device='cpu', precision='fp32')\n"
        "stats = runner.run_extract(cfg)\n"
        "print(stats.images, stats.written, json.dumps([m for m in new if m.split('.')[0] == 'pandas']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["6", "2", "[]"]
