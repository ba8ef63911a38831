"""The HTTP JSON API (a Starlette app): ``POST /recommend``, ``POST /score``, ``GET /healthz``, ``GET /metadata``.

Requests are checked field by field before anything is scored; a bad one gets a 4xx whose body is
``{"error": "<one line>", "field": "<the field>"}``: 400 for a body that is not a JSON object, 413 for a
body over the byte limit, 422 for a wrong type, an unknown field, user or item, or a list over its limit.
Prompts are built off the event loop (a worker thread) and scored by the :class:`~llm4rec.serve.batching.Batcher`,
so concurrent requests share forward passes.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llm4rec.errors import UserError
from llm4rec.serve.batching import LETTERS, YES_NO, Batcher
from llm4rec.serve.catalog import Catalog
from llm4rec.serve.model import CheckpointInfo
from llm4rec.serve.recommend import METHODS, Plan, Query, history_view, plan_query, ranked


@dataclass(frozen=True)
class Limits:
    """Request size bounds (a request over one gets a 4xx naming it)."""

    max_body_bytes: int = 256 * 1024
    max_history: int = 200
    max_candidates: int = 2000
    max_k: int = 1000


#: the listwise method's name in requests
LETTERS_METHOD = "letters"


class ApiError(Exception):
    """A bad request: HTTP status, the field at fault and one line saying what is wrong."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


#: fields each endpoint takes -> the JSON types they accept (checked in :func:`_check_types`)
FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "/recommend": {
        "user": ("string", "integer"),
        "history": ("array",),
        "candidates": ("array", "all", "null"),
        "k": ("integer",),
        "keep_seen": ("boolean",),
        "method": ("string",),
    },
    "/score": {"user": ("string", "integer"), "history": ("array",), "items": ("array",)},
}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _check_types(route: str, body: dict[str, Any]) -> None:
    allowed = FIELDS[route]
    for key, value in body.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ApiError(422, key, f"{key}: unknown field{hint}; {route} takes {', '.join(allowed)}")
        kinds = allowed[key]
        t = _json_type(value)
        if t in kinds or ("all" in kinds and value == "all"):
            continue
        want = " or ".join('"all"' if k == "all" else ("an " if k[0] in "aeiou" else "a ") + k for k in kinds)
        raise ApiError(422, key, f"{key}: expected {want}, got {t} {json.dumps(value)[:60]}")


def _check_sizes(body: dict[str, Any], limits: Limits) -> None:
    for key, limit in (
        ("history", limits.max_history),
        ("candidates", limits.max_candidates),
        ("items", limits.max_candidates),
    ):
        v = body.get(key)
        if isinstance(v, list) and len(v) > limit:
            raise ApiError(422, key, f"{key}: {len(v)} items, over the limit of {limit}")
    k = body.get("k")
    if isinstance(k, int) and not 1 <= k <= limits.max_k:
        raise ApiError(422, "k", f"k: must be between 1 and {limits.max_k}, got {k}")


async def _read_json(request: Request, limits: Limits) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, "body", f"body: {declared} bytes, over the limit of {limits.max_body_bytes}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limits.max_body_bytes:
            raise ApiError(413, "body", f"body: over the limit of {limits.max_body_bytes} bytes")
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "body", f"body: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body", f"body: expected a JSON object, got {_json_type(body)}")
    return body


def _user_error(exc: UserError) -> ApiError:
    """A catalogue/planning error as a 422 naming its field (the text before the first colon)."""
    text = str(exc)
    head = text.split(":", 1)[0]
    return ApiError(422, head.split()[0] if head and " " not in head.strip() else "body", text)


def create_app(
    model_info: CheckpointInfo, catalog: Catalog, batcher: Batcher, limits: Limits | None = None
) -> Starlette:
    """The API over a loaded model (behind ``batcher``) and a catalogue."""
    limits = limits or Limits()

    async def prepared(request: Request, route: str, build: Callable[[dict[str, Any]], Any]) -> Any:
        body = await _read_json(request, limits)
        _check_types(route, body)
        _check_sizes(body, limits)
        try:
            return body, await anyio.to_thread.run_sync(build, body)
        except UserError as exc:
            raise _user_error(exc) from None

    async def scored(kind: str, samples: list[dict[str, Any]]) -> list[Any]:
        try:
            return await asyncio.wrap_future(batcher.submit(kind, samples))
        except UserError as exc:  # e.g. a prompt over the cutoff even without history
            raise _user_error(exc) from None

    def query(body: dict[str, Any], candidates: Any, k: int, keep_seen: bool, method: str) -> Query:
        user = body.get("user")
        return Query(
            user=None if user is None else str(user),
            history=body.get("history"),
            candidates=None if candidates in (None, "all") else candidates,
            k=k,
            keep_seen=keep_seen,
            method=method,
        )

    def plan_recommend(body: dict[str, Any]) -> tuple[Plan, list[dict[str, Any]]]:
        method = body.get("method", "pointwise")
        if method not in METHODS:
            raise UserError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        q = query(body, body.get("candidates"), body.get("k", 10), body.get("keep_seen", False), method)
        p = plan_query(catalog, q, limits.max_candidates)
        if method == LETTERS_METHOD:
            return p, [catalog.letters_sample(p.history, p.candidates)]
        return p, catalog.yes_no_samples(p.history, p.candidates)

    def plan_score(body: dict[str, Any]) -> tuple[Plan, list[dict[str, Any]]]:
        if "items" not in body:
            raise UserError("items: required (the item ids to score)")
        q = query(body, body["items"], max(1, len(body["items"])), True, "pointwise")
        p = plan_query(catalog, q, limits.max_candidates)
        return p, catalog.yes_no_samples(p.history, p.candidates)

    async def recommend(request: Request) -> JSONResponse:
        body, (p, samples) = await prepared(request, "/recommend", plan_recommend)
        if p.method == LETTERS_METHOD:
            scores = (await scored(LETTERS, samples))[0]
        else:
            scores = await scored(YES_NO, samples)
        return JSONResponse(
            {
                "user": body.get("user"),
                "history": history_view(catalog, p.history),
                "method": p.method,
                "candidates_scored": len(p.candidates),
                "recommendations": ranked(catalog, p.candidates, scores, p.k),
            }
        )

    async def score(request: Request) -> JSONResponse:
        body, (p, samples) = await prepared(request, "/score", plan_score)
        scores = await scored(YES_NO, samples)
        items = [
            {"item_id": catalog.item_ids[c], "title": catalog.titles[c], "score": float(s)}
            for c, s in zip(p.candidates, scores)
        ]
        return JSONResponse(
            {"user": body.get("user"), "history": history_view(catalog, p.history), "scores": items}
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                **model_info.as_dict(),
                "catalogue": catalog.describe(),
                "limits": asdict(limits),
                "batching": {
                    "enabled": batcher.enabled,
                    "max_wait_ms": batcher.max_wait_s * 1000,
                    **asdict(batcher.stats),
                },
            }
        )

    def error_response(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    async def other_http(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "internal error")
        return JSONResponse({"error": f"{request.url.path}: {detail}", "field": "path"}, status_code=status)

    from starlette.exceptions import HTTPException

    return Starlette(
        routes=[
            Route("/recommend", recommend, methods=["POST"]),
            Route("/score", score, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metadata", metadata, methods=["GET"]),
        ],
        exception_handlers={ApiError: error_response, HTTPException: other_http},
    )
