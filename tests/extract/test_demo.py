"""The demo runs offline (its photos made from matplotlib's samples) and a rerun says what was already done
(pipeline/extract/demo.py, pipeline/extract/runner.py)."""

from __future__ import annotations

import socket
import subprocess

import pytest
from PIL import Image

from pipeline.extract import demo
from pipeline.extract.demo import DemoConfig, find_photos, format_demo, run_demo


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No shared photos, no network, no subprocess (pip download): what a machine without an index has."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"the demo reached out: {args[:1]}")

    monkeypatch.setattr(demo, "SHARED_PHOTOS", tmp_path / "no-shared-photos")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    real_connect = socket.socket.connect

    def connect(sock, address):  # local (AF_UNIX) sockets are the loader's workers
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_demo_photos_are_made_offline(offline, tmp_path):
    photos = find_photos(tmp_path / "demo")
    files = sorted(photos.iterdir())
    assert photos == tmp_path / "demo" / "photos" and len(files) == 12
    assert len({f.read_bytes() for f in files}) == 12  # twelve different images
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 32
    assert not (tmp_path / "demo" / "photos.part").exists()
    assert find_photos(tmp_path / "demo") == photos and sorted(photos.iterdir()) == files  # made once


def test_demo_runs_offline_and_a_rerun_says_the_images_were_already_done(offline, tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "demo"), weights="random", resolution=28, progress=False)
    first = run_demo(cfg)
    assert (first.stats.images, first.stats.failures, first.stats.skipped) == (12, 0, 0)
    assert "demo: 12 images, 0 failures" in format_demo(first)
    again = run_demo(cfg)
    assert (again.stats.images, again.stats.images_done, again.stats.skipped) == (0, 12, 2)
    assert "demo: 0 new images, 12 already done, 0 failures" in format_demo(again)
