"""The JSON API: search by image, key or id; thumbnails by id; dedup groups, decisions and the selection, paged."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipeline.layout import GROUPS
from pipeline.serve.errors import ServeError
from pipeline.serve.service import Results, Service, thumb_url

router = APIRouter()
MAX_KEY_CHARS = 4096
RAW_TYPES = ("application/octet-stream",)


def service_of(request: Request) -> Service:
    return request.app.state.service


def results_json(results: Results) -> dict:
    return {"query": results.query, "results": [{**asdict(h), "thumbnail": thumb_url(h.id)} for h in results.hits]}


def linked(service: Service, row: dict) -> dict:
    """A groups or selection row with the index id of its image (None when the index does not hold it), the
    thumbnail URL and the search URL that go with it."""
    id_ = service.index_id(row["key"], row["shard"], row["index"])
    return {**row, "index_id": id_, "thumbnail": thumb_url(id_),
            "search": None if id_ is None else f"/api/search?id={id_}"}


def group_json(service: Service, group: dict) -> dict:
    return {**group, "members": [linked(service, m) for m in group["members"]]}


async def read_upload(request: Request) -> tuple[bytes, str | None]:
    """The uploaded image: the multipart field `image` (a page's form) or the whole body (image/*, or
    application/octet-stream); the guard has already refused bodies over the limit."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ServeError(400, "no file in the form field 'image'")
            return await upload.read(), upload.filename
        finally:
            await form.close()
    if ctype.startswith("image/") or ctype in RAW_TYPES:
        return await request.body(), None
    raise ServeError(415, "send an image: the request body (Content-Type image/* or application/octet-stream) or "
                          "the multipart form field 'image'")


@router.get("/health")
def health(request: Request) -> dict:
    return service_of(request).health()


@router.get("/api/search")
def search(request: Request, id: int | None = Query(None, ge=0), key: str | None = Query(None, min_length=1,
           max_length=MAX_KEY_CHARS), k: int | None = Query(None)) -> dict:
    """Neighbours of an indexed image, by `id` or by `key`."""
    service = service_of(request)
    if (id is None) == (key is None):
        raise ServeError(400, "give exactly one of id= and key= (or POST an image)")
    return results_json(service.by_id(id, k) if id is not None else service.by_key(key, k))


@router.post("/api/search")
async def search_image(request: Request, k: int | None = Query(None)) -> dict:
    """Neighbours of an uploaded image."""
    data, name = await read_upload(request)
    return results_json(await run_in_threadpool(service_of(request).by_image, data, k, name))


@router.get("/api/images/{id}")
def image(request: Request, id: int) -> dict:
    key, shard, index = service_of(request).row(id)
    return {"id": id, "key": key, "shard": shard, "index": index, "thumbnail": thumb_url(id),
            "search": f"/api/search?id={id}"}


@router.get("/thumb/{id}")
def thumbnail(request: Request, id: int, size: int | None = Query(None, ge=16, le=1024)) -> Response:
    data = service_of(request).thumbnail(id, size)
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


def paged(page: int, per_page: int, total: int, items: list, name: str, **extra) -> dict:
    return {"page": page, "per_page": per_page, "total": total, "pages": -(-total // per_page), name: items, **extra}


@router.get("/api/groups")
def groups(request: Request, page: int = Query(0, ge=0), per_page: int | None = Query(None, ge=1, le=500)) -> dict:
    """Duplicate groups (components of more than one image), biggest first, with the review's decisions."""
    service = service_of(request)
    per_page = per_page or service.cfg.per_page
    items, total = service.review.groups_page(page, per_page)
    return paged(page, per_page, total, [group_json(service, g) for g in items], "groups")


@router.get("/api/groups/{component}")
def group(request: Request, component: int) -> dict:
    service = service_of(request)
    return group_json(service, service.review.group(component))


class Decision(BaseModel):
    action: str = Field(description="keeper, not_duplicate or duplicate (undoes not_duplicate)")
    id: int = Field(ge=0, description=f"the image's id in {GROUPS}")


@router.post("/api/decisions")
def decide(request: Request, decision: Decision) -> dict:
    """Record a review decision (appended to review/decisions.parquet); returns the group as it is now."""
    service = service_of(request)
    return {"group": group_json(service, service.review.decide(decision.action, decision.id))}


@router.get("/api/decisions")
def decisions(request: Request, page: int = Query(0, ge=0), per_page: int = Query(50, ge=1, le=500)) -> dict:
    items, total = service_of(request).review.decisions(page, per_page)
    return paged(page, per_page, total, items, "decisions")


@router.get("/api/selection")
def selection(request: Request, page: int = Query(0, ge=0), per_page: int | None = Query(None, ge=1, le=500),
              source: str | None = Query(None, max_length=MAX_KEY_CHARS)) -> dict:
    """The curate selection's rows, paged (of one source, when given)."""
    service = service_of(request)
    per_page = per_page or service.cfg.per_page
    rows, total, sources = service.review.selection_page(page, per_page, source)
    return paged(page, per_page, total, [linked(service, r) for r in rows], "rows", sources=sources)
