"""Mistakes in --resolution and --weights are refused up front in one paragraph (issue 12, items 7 and 8)."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.errors import ConfigError, WeightsError
from pipeline.extract.runner import run_extract
from tests.conftest import TINY_KWARGS, TINY_MODEL, make_image, tiny_config


class TrainerState:
    """Stands for any object of a training code base that a checkpoint may pickle."""


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(0).save(folder / "a.jpg")
    return folder


@pytest.mark.parametrize("resolution, fix", [(13, "use 14 or 28"), (15, "use 14 or 28"), (57, "use 56 or 70")])
def test_resolution_not_a_multiple_of_the_patch_is_refused_before_anything_is_written(tmp_path, photos,
                                                                                        resolution, fix):
    with pytest.raises(ConfigError, match=rf"--resolution {resolution} is not a multiple of .* patch size 14: {fix}"):
        run_extract(tiny_config(tmp_path / "out", images=str(photos), resolution=resolution))
    assert not (tmp_path / "out" / "config.json").exists() and not (tmp_path / "out" / "features").exists()


def test_resolution_in_dynamic_mode_is_a_longest_side_and_may_be_any_size(tmp_path, photos):
    stats = run_extract(tiny_config(tmp_path / "out", images=str(photos), resolution=57, resize_mode="dynamic"))
    assert stats.images == 1


def test_wrong_keys_are_counted_not_listed(tmp_path, photos):
    torch.save({f"layer{i}.weight": torch.zeros(2) for i in range(300)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError) as info:
        run_extract(tiny_config(tmp_path / "out", images=str(photos), weights=str(tmp_path / "other.pth")))
    text = str(info.value)
    assert len(text) < 600 and "300 in the file are unknown to it (e.g. layer0.weight" in text
    assert "weights of the model are missing (e.g. cls_token" in text and "no ViT layout" in text


def test_a_vit_of_another_depth_names_the_nearest_layout(tmp_path, photos):
    deeper = timm.create_model(TINY_MODEL, pretrained=False, **{**dict(TINY_KWARGS), "depth": 3})
    save_file(deeper.state_dict(), tmp_path / "deeper.safetensors")
    with pytest.raises(WeightsError, match=r"unknown to it \(e.g. blocks\.2\..*ViT in the timm / facebookresearch "
                                           r"layout with 3 blocks: check --model"):
        run_extract(tiny_config(tmp_path / "out", images=str(photos), weights=str(tmp_path / "deeper.safetensors")))


def test_pickled_objects_are_refused_with_a_conversion_recipe(tmp_path, photos):
    # a training checkpoint that pickles an object of its own code
    torch.save({"model": {"w": torch.zeros(1)}, "trainer": TrainerState()}, tmp_path / "trainer.pth")
    with pytest.raises(WeightsError) as info:
        run_extract(tiny_config(tmp_path / "out", images=str(photos), weights=str(tmp_path / "trainer.pth")))
    text = str(info.value)
    assert "refuses to load" in text and "st.save_file" in text and "trainer.safetensors" in text
    assert "weights_only=False." not in text.split("convert it once")[0]  # no "just retry unsafely" advice


def test_a_file_that_is_no_checkpoint(tmp_path, photos):
    (tmp_path / "notes.pth").write_text("hello, I am text")
    with pytest.raises(WeightsError, match=r"notes.pth is not a checkpoint: it holds text \('hello, I am text'"):
        run_extract(tiny_config(tmp_path / "out", images=str(photos), weights=str(tmp_path / "notes.pth")))
