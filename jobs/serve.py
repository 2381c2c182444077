"""`python -m jobs.serve`: a local search and review server over an index (JSON API, pages, Python client).

One process loads the index (memory-mapped where Faiss can) and a random-access copy of its stored vectors,
and, on the first image query, the model with exactly the index's provenance. It answers on 127.0.0.1 only
unless --host says otherwise.
"""

from __future__ import annotations

import argparse

from jobs._args import add_running_args, option
from jobs._cli import run_command

SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "jinja2", "multipart", "python_multipart", "pydantic")

EPILOG = """examples:
  python -m jobs.serve --index out/train/index
  python -m jobs.serve --index out/train --port 8765 --reviewer alice
  python -m jobs.serve --index out/train/index --host 0.0.0.0 --max-upload-mb 5
then open http://127.0.0.1:8000/ (search, duplicate groups, selection), or from Python:
  from pipeline.serve.client import Client; Client("http://127.0.0.1:8000").search("photo.jpg", k=10)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.serve.config import ServeConfig

    p.add_argument("--index", required=True, help="index folder (or the extract output holding index/)")
    option(p, ServeConfig, "root", "the output root whose dedup groups, curate selection and review are served, "
                                   "and whose sources give the thumbnails (default: the root the index records)")
    option(p, ServeConfig, "port", "TCP port; 0 takes any free port (default: %(default)s)")
    option(p, ServeConfig, "host", "address to listen on; anything but loopback lets other machines search, see the "
                                   "images and record decisions, with no login: a warning says so "
                                   "(default: %(default)s)")
    option(p, ServeConfig, "k", "neighbours per query unless the request says (default: %(default)s)")
    option(p, ServeConfig, "max_k", "the most neighbours a request may ask for (default: %(default)s)")
    option(p, ServeConfig, "max_upload_mb", "larger request bodies are refused with 413 (default: %(default)s)")
    option(p, ServeConfig, "max_pixels", "uploaded images with more pixels are refused with 413, before they are "
                                         "decoded (decompression bombs) (default: %(default)s)")
    option(p, ServeConfig, "per_page", "duplicate groups or selected images per page (default: %(default)s)")
    option(p, ServeConfig, "thumb_size", "thumbnail side in pixels (default: %(default)s)")
    option(p, ServeConfig, "reviewer", "name recorded as `who` of the decisions made here (default: the OS user)")
    option(p, ServeConfig, "device", "where uploaded images are embedded: auto, cpu, cuda, ... (default: %(default)s)")
    option(p, ServeConfig, "weights", "the index's weights file, when it moved since the index was built (checked "
                                      "against the SHA-256 the index records)", metavar="PATH")
    option(p, ServeConfig, "mmap", "read the whole index into memory instead of mapping it")
    p.add_argument("--offline", action="store_true",
                   help="never reach the hub: sets HF_HUB_OFFLINE=1 (hub weights then only come from the cache)")
    add_running_args(p, ServeConfig, progress="no progress bar while the stored vectors are copied beside the "
                                              "index (the first start only; the server itself shows none)")


def run(args: argparse.Namespace) -> int:
    from jobs._args import config_from
    from pipeline.errors import UserError
    from pipeline.serve.config import ServeConfig

    try:
        from pipeline.serve.run import serve
    except ModuleNotFoundError as exc:
        if exc.name not in SERVER_PACKAGES:
            raise
        raise UserError(f"the server needs {exc.name}, which is not installed: pip install -e '.[serve]' (make venv "
                        f"installs it with the dev extras)") from exc

    serve(config_from(ServeConfig, args))
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
