"""The pages: server-rendered Jinja2 templates (every value escaped), plain forms and no script."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipeline.serve.api import MAX_KEY_CHARS, linked, service_of
from pipeline.serve.errors import ServeError
from pipeline.serve.images import SourceError, jpeg_thumbnail
from pipeline.serve.service import Results, Service

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
router = APIRouter()


def render(request: Request, template: str, code: int = 200, **values) -> HTMLResponse:
    """A page: the template filled with `values` (every value escaped), answered with HTTP status `code`."""
    service = service_of(request)
    prov = service.index.provenance
    facts = f"{service.index.count:,} images · {prov.get('model')} · {service.index.feature}"
    random_weights = (prov.get("weights") or {}).get("source") == "random"  # said on every page, not only in facts
    has_selection = service.review.selected_path.exists()  # no Selection link before `make curate`
    html = ENV.get_template(template).render(facts=facts, random_weights=random_weights,
                                             has_selection=has_selection, **values)
    return HTMLResponse(html, status_code=code, headers={"cache-control": "no-store"})


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, title=f"error {status}", nav="", status=status, message=message)


def search_page(request: Request, service: Service, k: int, results: Results | None = None, label: str = "",
                query_thumb: str | None = None, key: str | None = None) -> HTMLResponse:
    return render(request, "search.html", title="search", nav="search", k=k, max_k=service.cfg.max_k, key=key,
                  results=None if results is None else results.hits, query_label=label, query_thumb=query_thumb)


@router.get("/style.css")
def style() -> Response:
    return Response((TEMPLATES / "style.css").read_text(), media_type="text/css",
                    headers={"cache-control": "private, max-age=600"})


@router.get("/", response_class=HTMLResponse)
def home(request: Request, k: int | None = Query(None)) -> HTMLResponse:
    service = service_of(request)
    return search_page(request, service, service.k(k))


@router.get("/search", response_class=HTMLResponse)
def search_by_id(request: Request, id: int | None = Query(None, ge=0),
                 key: str | None = Query(None, max_length=MAX_KEY_CHARS),
                 k: int | None = Query(None)) -> Response:
    service = service_of(request)
    if id is None and not key:
        return RedirectResponse("/", status_code=303)
    results = service.by_id(id, k) if id is not None else service.by_key(key, k)
    return search_page(request, service, service.k(k), results, results.query["key"], key=key)


@router.post("/search", response_class=HTMLResponse)
async def search_by_upload(request: Request) -> HTMLResponse:
    service = service_of(request)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ServeError(415, "upload the image with the page's form (multipart/form-data)")
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ServeError(400, "choose an image first")
        data, name = await upload.read(), upload.filename or "upload"
        k_text = form.get("k") or ""
    finally:
        await form.close()
    k = service.k(int(k_text) if isinstance(k_text, str) and k_text.isdigit() else None)
    results = await run_in_threadpool(service.by_image, data, k, name)
    try:
        thumb = jpeg_thumbnail(data, 96, service.cfg.max_pixels)
        query_thumb = "data:image/jpeg;base64," + base64.b64encode(thumb).decode()
    except SourceError:
        query_thumb = None
    return search_page(request, service, k, results, name, query_thumb)


def pages_of(total: int, per_page: int) -> int:
    return -(-total // per_page)


@router.get("/groups", response_class=HTMLResponse)
def groups(request: Request, page: int = Query(0, ge=0)) -> HTMLResponse:
    service = service_of(request)
    per_page = service.cfg.per_page
    items, total = service.review.groups_page(page, per_page)
    items = [{**g, "members": [linked(service, m) for m in g["members"]]} for g in items]
    return render(request, "groups.html", title="duplicate groups", nav="groups", groups=items, total=total,
                  page=page, pages=pages_of(total, per_page), extra="")


@router.post("/groups/decide")
async def decide(request: Request) -> RedirectResponse:
    """A decision from the groups page; back to the group, on the page it was made from (Post/Redirect/Get)."""
    service = service_of(request)
    form = await request.form(max_files=0, max_fields=8)
    action, id_text, page_text = (str(form.get(name) or "") for name in ("action", "id", "page"))
    if not id_text.isdigit():
        raise ServeError(400, "the decision names no image id")
    page = int(page_text) if page_text.isdigit() else 0
    group = await run_in_threadpool(service.review.decide, action, int(id_text))
    return RedirectResponse(f"/groups?page={page}#g{group['component']}", status_code=303)


@router.get("/selection", response_class=HTMLResponse)
def selection(request: Request, page: int = Query(0, ge=0),
              source: str | None = Query(None, max_length=MAX_KEY_CHARS)) -> HTMLResponse:
    service = service_of(request)
    per_page = service.cfg.per_page
    rows, total, sources = service.review.selection_page(page, per_page, source)
    return render(request, "selection.html", title="selection", nav="selection", total=total, sources=sources,
                  source=source, rows=[linked(service, r) for r in rows], page=page,
                  pages=pages_of(total, per_page), extra=f"&source={quote(source)}" if source else "")


@router.get("/decisions", response_class=HTMLResponse)
def decisions(request: Request, page: int = Query(0, ge=0)) -> HTMLResponse:
    items, total = service_of(request).review.decisions(page, 100)
    return render(request, "decisions.html", title="decisions", nav="decisions", decisions=items, total=total,
                  page=page, pages=pages_of(total, 100), extra="")
