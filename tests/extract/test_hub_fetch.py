"""`--weights hub` fetches once (issue 14), tested against a stand-in hub on 127.0.0.1 (HF_ENDPOINT) that
serves a saved random-weight safetensors: first run fetches, later runs stay off the network, a dropped
connection resumes where it stopped, a damaged cache file is refetched, and HF_HUB_OFFLINE=1 opens no socket."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file

from tests.conftest import TINY_MODEL

REPO_ID = "timm/vit_small_patch14_reg4_dinov2.lvd142m"
FILE = "model.safetensors"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# ~22 MB of float32: more than huggingface_hub's 10 MB download chunk, so a cut download leaves a part to resume
HUB_KWARGS = {"depth": 12, "embed_dim": 192, "num_heads": 3}
REPO_ROOT = Path(__file__).resolve().parents[2]


class StandInHub:
    """The two requests hf_hub_download makes (HEAD for the metadata, GET with Range for the bytes), logged;
    while `cut_gets` > 0, a GET sends only the first half of its body, then closes the connection."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.sha = payload, hashlib.sha256(payload).hexdigest()
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_gets = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _head(self, status: int, length: int, extra: dict | None = None) -> None:
                self.send_response(status)
                for k, v in {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{hub.sha}"', "ETag": f'"{hub.sha}"',
                             "X-Linked-Size": str(len(hub.payload)), "Accept-Ranges": "bytes",
                             "Content-Length": str(length), **(extra or {})}.items():
                    self.send_header(k, v)
                self.end_headers()

            def _known(self) -> bool:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                if self.path.split("?")[0] == f"/{REPO_ID}/resolve/main/{FILE}":
                    return True
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                if self._known():
                    self._head(200, len(hub.payload))

            def do_GET(self) -> None:  # noqa: N802
                if not self._known():
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                body = hub.payload[start:]
                if start:
                    self._head(206, len(body), {"Content-Range": f"bytes {start}-{len(hub.payload) - 1}/"
                                                                 f"{len(hub.payload)}"})
                else:
                    self._head(200, len(body))
                if hub.cut_gets > 0:
                    hub.cut_gets -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self) -> list[str | None]:
        return [rng for method, _, rng in self.requests if method == "GET"]


@pytest.fixture
def hub(tmp_path):
    model = timm.create_model(TINY_MODEL, pretrained=False, **HUB_KWARGS)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    server = StandInHub(path.read_bytes())
    yield server
    server.server.shutdown()


FETCH = """
import json, socket, sys
if sys.argv[1] == "nosocket":
    def refuse(*a, **k):
        print("SOCKET OPENED", flush=True)
        raise OSError("no sockets in this test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
import torch
from pipeline.errors import UserError
from pipeline.extract.backbone import create_backbone
from tests.conftest import tiny_config
kwargs = tuple(json.loads(sys.argv[2]).items())
try:
    b = create_backbone(tiny_config("unused", images="unused", weights="hub", model_kwargs=kwargs), torch.device("cpu"))
except UserError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(2)
print(json.dumps(b.provenance()["weights"]))
"""


def fetch(tmp_path: Path, hub: StandInHub | None, mode: str = "net", offline: bool = False) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1" if offline else "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    env.pop("HF_HUB_CACHE", None)
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    proc = subprocess.run([sys.executable, "-c", FETCH, mode, json.dumps(HUB_KWARGS)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return {"code": proc.returncode, "out": json.loads(lines[-1]), "stdout": proc.stdout, "stderr": proc.stderr}


def test_the_first_run_fetches_and_later_runs_stay_off_the_network(tmp_path, hub):
    first = fetch(tmp_path, hub)
    assert first["code"] == 0, first["stderr"][-2000:]
    assert first["out"]["source"] == "hub" and first["out"]["sha256"] == hub.sha
    assert Path(first["out"]["path"]).read_bytes() == hub.payload
    assert hub.gets() == [None]  # one plain GET of the whole file
    seen = len(hub.requests)
    second = fetch(tmp_path, hub, mode="nosocket")
    assert second["code"] == 0 and second["out"] == first["out"]
    assert len(hub.requests) == seen and "SOCKET OPENED" not in second["stdout"]


def test_an_interrupted_download_is_resumed(tmp_path, hub):
    """The first two GETs are cut half-way: the download goes on from the last whole 10 MB chunk (HTTP Range),
    not from the start; a download cut more often than huggingface_hub retries fails in one line."""
    hub.cut_gets = 2
    first = fetch(tmp_path, hub)
    assert first["code"] == 0 and first["out"]["sha256"] == hub.sha
    assert hub.gets() == [None, "bytes=10485760-", "bytes=10485760-"]
    assert Path(first["out"]["path"]).read_bytes() == hub.payload
    hub.cut_gets = 100
    failed = fetch(tmp_path / "other", hub)
    assert failed["code"] == 2 and "could not fetch" in failed["out"]["error"]
    assert "rerun" in failed["out"]["error"] and "HF_HUB_OFFLINE=1" in failed["out"]["error"]


def test_a_damaged_cache_file_is_detected_and_fetched_again(tmp_path, hub):
    path = Path(fetch(tmp_path, hub)["out"]["path"])
    blob = Path(os.path.realpath(path))
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0xFF
    blob.write_bytes(bytes(data))
    offline = fetch(tmp_path, hub, offline=True)
    assert offline["code"] == 2 and "damaged" in offline["out"]["error"]
    again = fetch(tmp_path, hub)
    assert again["code"] == 0 and again["out"]["sha256"] == hub.sha and blob.read_bytes() == hub.payload
    assert "damaged (checksum mismatch): fetching it again" in again["stderr"]
    assert len(hub.gets()) == 2


def test_offline_with_an_empty_cache_opens_no_socket_and_says_what_to_do(tmp_path, hub):
    result = fetch(tmp_path, hub, mode="nosocket", offline=True)
    assert result["code"] == 2 and "HF_HUB_OFFLINE=1 forbids fetching" in result["out"]["error"]
    assert "--weights PATH" in result["out"]["error"]
    assert "SOCKET OPENED" not in result["stdout"] and hub.requests == []


def test_offline_flag_sets_hf_hub_offline_for_the_job(monkeypatch, capsys):
    """`--offline` on every job that takes --weights: HF_HUB_OFFLINE=1 before the job runs."""
    from jobs import extract as extract_job
    from jobs._cli import build_parser, run_job

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    args = build_parser(extract_job).parse_args(["--images", "x", "--out", "y", "--offline"])
    assert args.offline is True
    seen = []
    with pytest.raises(SystemExit) as exit_:
        run_job(lambda: seen.append(os.environ.get("HF_HUB_OFFLINE")) or 0, "WARNING", args.offline)
    assert exit_.value.code == 0 and seen == ["1"]


def test_an_unreachable_hub_is_one_clear_error_at_once(tmp_path):
    """No network (a closed port here; a failed name lookup alike): no retries, one message with the ways out."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused

    class Closed:
        url = f"http://127.0.0.1:{port}"
        requests: list = []

    t0 = time.perf_counter()
    result = fetch(tmp_path, Closed())
    assert result["code"] == 2 and "cannot be reached" in result["out"]["error"]
    assert "--weights random" in result["out"]["error"] and "HF_HUB_OFFLINE=1" in result["out"]["error"]
    assert time.perf_counter() - t0 < 25  # the subprocess start and model build; no 30 s of retries
