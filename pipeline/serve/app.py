"""The ASGI application: FastAPI routes (JSON API and pages) behind the guard, errors as one line each."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.serve.api import router as api_router
from pipeline.serve.config import LOOPBACK
from pipeline.serve.errors import ServeError
from pipeline.serve.guard import BodyTooLarge, Guard
from pipeline.serve.pages import error_page
from pipeline.serve.pages import router as page_router
from pipeline.serve.service import Service

log = logging.getLogger(__name__)


def wants_json(request: Request) -> bool:
    """API and thumbnail routes answer errors in JSON; pages answer with a page."""
    return request.url.path.startswith(("/api/", "/thumb/", "/health"))


def error_response(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return error_page(request, status, message)


def create_app(service: Service) -> Guard:
    """The application serving `service`: pass it to uvicorn (or any ASGI server)."""
    app = FastAPI(title="dinocurate", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.include_router(api_router)
    app.include_router(page_router)

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError) -> Response:
        return error_response(request, exc.status, exc.message)

    @app.exception_handler(UserError)
    async def unavailable(request: Request, exc: UserError) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(request, 503, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return error_response(request, 413, f"the request is larger than {service.cfg.max_upload_bytes} bytes")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return error_response(request, 422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(request, exc.status_code, str(exc.detail))

    hosts = None if service.cfg.exposed else LOOPBACK
    return Guard(app, service.cfg.max_upload_bytes, hosts)
