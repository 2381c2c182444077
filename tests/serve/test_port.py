"""`make serve` on a port in use says so in one line before loading anything (issue 26, item 8); the port it binds
first is the one it serves on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobs import serve as serve_job

REPO = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_one_line_that_says_so(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:  # the index need not exist: the port is checked first
            serve_job.main(["--index", str(tmp_path / "no-index"), "--port", str(port)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: port {port} on 127.0.0.1 is taken (another server is listening there): choose another "
                   f"with --port (make serve ARGS='--port {port + 1}'; --port 0 takes any free port)"]


def test_serve_answers_on_the_port_it_bound(folder_root):
    proc = subprocess.Popen([sys.executable, "-m", "jobs.serve", "--index", str(folder_root), "--port", "0",
                             "--no-progress"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            found = re.search(r"serving \d+ images on (http://127\.0\.0\.1:(\d+)/)", line)
            if found or not line:
                break
        assert found and found[2] != "0", "".join(lines)
        for _ in range(100):  # the socket is bound before the index loads; uvicorn listens a moment later
            try:
                with urllib.request.urlopen(found[1], timeout=10) as page:
                    assert page.status == 200
                    break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.1)
        else:
            pytest.fail("the server never answered")
    finally:
        proc.terminate()
        proc.wait(30)
