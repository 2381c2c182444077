"""Running the server: uvicorn in this process (`serve`), or in a background thread (`BackgroundServer`, tests)."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time

import faiss
import uvicorn

from pipeline.errors import ConfigError
from pipeline.serve.app import create_app
from pipeline.serve.config import ServeConfig
from pipeline.serve.service import Service

log = logging.getLogger(__name__)


def uvicorn_config(cfg: ServeConfig, service: Service, log_level: str = "warning") -> uvicorn.Config:
    """One process, no reload, no proxy headers trusted, no Server header, at most 256 requests at once; its log
    lines go through this process's logging set-up."""
    return uvicorn.Config(create_app(service), host=cfg.host, port=cfg.port, log_level=log_level, log_config=None,
                          server_header=False, proxy_headers=False, limit_concurrency=256, timeout_keep_alive=5)


def warn_if_exposed(cfg: ServeConfig) -> None:
    if cfg.exposed:
        log.warning("listening on %s, not on this machine only: anyone who reaches port %d can search these "
                    "images, see them, and record review decisions (there is no login); put it behind your own "
                    "access control", cfg.host, cfg.port)


def listen(cfg: ServeConfig) -> socket.socket:
    """The server's socket, bound before anything is loaded: a port in use (or an address this machine does not
    have) is one line that says what to change, not a uvicorn error after the index was read."""
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {cfg.port} on {cfg.host} is taken (another server is listening there): choose "
                              f"another with --port (make serve ARGS='--port {cfg.port + 1}'; --port 0 takes any "
                              f"free port)") from exc
        raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}; choose another --host "
                          f"or --port") from exc
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServeConfig) -> None:
    """Bind the port, load the index (and the stored vectors), then serve until interrupted; the model loads on
    the first image query."""
    sock = listen(cfg)
    try:
        warn_if_exposed(cfg)
        faiss.omp_set_num_threads(1)  # requests run in parallel threads: one Faiss thread each, no oversubscription
        service = Service(cfg)
        server = uvicorn.Server(uvicorn_config(cfg, service, "info"))
        log.info("serving %d images on http://%s:%d/ (Ctrl-C stops)", service.index.count,
                 f"[{cfg.host}]" if ":" in cfg.host else cfg.host, sock.getsockname()[1])
        server.run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The server on a thread of this process (port 0: a free port), for tests and notebooks:
    `with BackgroundServer(cfg) as url: ...`."""

    def __init__(self, cfg: ServeConfig, service: Service | None = None) -> None:
        warn_if_exposed(cfg)
        self.service = service or Service(cfg)
        self.server = uvicorn.Server(uvicorn_config(cfg, self.service))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="dinocurate-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self, timeout: float = 30) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
