"""`create_app`: the FastAPI application of `catsdogs serve`: routes, lifespan, keys, CORS and error handlers.

Endpoints: `POST /v1/predict` (multipart `files` or one raw image),
`POST /v1/explain` (Grad-CAM PNG), `GET /v1/model`, `GET /healthz`,
`GET /readyz`, `GET /metrics`, the page at `/` with its files under
`/static/`, and `/docs` with `/openapi.json`. The model is loaded once, in the
lifespan, in a thread, so the server answers `/healthz` (and `/readyz` 503)
while it loads. The API handlers are `async` because they await the
micro-batcher; decoding and the model run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from catsdogs import __version__
from catsdogs.service import pages
from catsdogs.service.errors import ServiceError, install_error_handlers
from catsdogs.service.middleware import ServiceMiddleware
from catsdogs.service.model import export_in_child_process
from catsdogs.service.schemas import (
    HealthResponse,
    ModelResponse,
    ModelSummary,
    PredictResponse,
    ReadyResponse,
    error_responses,
    image_request_body,
)
from catsdogs.service.settings import ServiceSettings
from catsdogs.service.state import ServiceState
from catsdogs.service.uploads import Upload, parse_multipart, read_body, request_kind

API_KEY_VARIABLE = "CATSDOGS_API_KEY"
STATIC_DIR = Path(__file__).resolve().parent / "static"
_bearer = HTTPBearer(auto_error=False, description=f"The key in {API_KEY_VARIABLE}, when the server sets one.")


def create_app(
    source: str | os.PathLike,
    *,
    settings: ServiceSettings | None = None,
    api_key: str | None = None,
    static_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    on_load_failure: Callable[[str], None] | None = None,
    make_export: Callable[[Path, str], None] = export_in_child_process,
) -> FastAPI:
    """Build the service for one model.

    Args:
        source: RUN_OR_EXPORT: a run folder (served through its ONNX export, made if missing) or an export
            folder.
        settings: limits and tuning; default the documented `[serve]` defaults.
        api_key: when set, every /v1/ request needs `Authorization: Bearer <api_key>`.
        static_dir: the page's folder (index.html and its files); default the package's own.
        progress: called with lines of progress (loading, exporting, ready); default: the service's logger.
        on_load_failure: called with the message when the model cannot be loaded (the server stops then).
        make_export: makes a run's ONNX export when it is missing or stale.

    Returns:
        The FastAPI application; its state is `app.state.service` (a `ServiceState`).
    """
    settings = settings or ServiceSettings()
    state = ServiceState(
        source,
        settings=settings,
        progress=progress or _log_progress,
        on_load_failure=on_load_failure,
        make_export=make_export,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # The model loads in a thread while the server already answers /healthz, and /readyz says 503.
        state.start_loading()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="catsdogs",
        version=__version__,
        description=(
            "Label photos with a trained catsdogs model. Send photos to POST /v1/predict as multipart `files` "
            "or as one raw image body; every error has the shape {error: {code, message, received}}."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    install_error_handlers(app, count_rejection=state.metrics.count_rejection)
    app.add_middleware(ServiceMiddleware, metrics=state.metrics, max_in_flight=settings.max_in_flight)
    if settings.cors_origin:
        # Added last, so it is the outermost layer and answers preflight requests before keys are checked.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[settings.cors_origin],
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.include_router(_api_router(state, api_key=api_key))
    app.include_router(_operations_router(state))
    pages.add_pages(app, Path(static_dir) if static_dir is not None else STATIC_DIR)
    return app


def _api_router(state: ServiceState, *, api_key: str | None) -> APIRouter:
    dependencies = [Depends(_key_checker(api_key))] if api_key else []
    router = APIRouter(prefix="/v1", dependencies=dependencies, tags=["predict"])
    settings = state.settings

    @router.get(
        "/model",
        response_model=ModelResponse,
        responses=error_responses(401, 503),
        summary="Describe the served model",
    )
    async def model() -> ModelResponse:
        info = state.require_ready()
        return ModelResponse(
            **_summary(info).model_dump(),
            architecture=info.architecture,
            classes=info.classes,
            image_size=list(info.image_size),
            test_accuracy=info.test_accuracy,
            verified=info.verified,
            threshold=info.threshold,
            test_time_augmentation=info.test_time_augmentation,
            max_pixels=info.max_pixels,
            min_side=info.min_side,
            max_files=settings.max_files,
            max_upload_bytes=settings.max_upload_bytes,
            explain=state.explainer is not None,
        )

    @router.post(
        "/predict",
        response_model=PredictResponse,
        responses=error_responses(400, 401, 408, 413, 415, 422, 503),
        openapi_extra=image_request_body(max_files=settings.max_files, many=True),
        summary="Label one or many photos",
    )
    async def predict(request: Request) -> PredictResponse:
        info = state.require_ready()
        uploads = await _read_uploads(request, settings, max_files=settings.max_files)
        results = await asyncio.gather(*(state.predict_upload(upload) for upload in uploads))
        errors = [error for _, error in results if error is not None]
        if len(errors) == len(results):
            # Nothing could be used: the request fails with the first photo's status, as one photo alone would.
            raise _all_failed(errors, uploads)
        return PredictResponse(model=_summary(info), predictions=[entry for entry, _ in results])

    @router.post(
        "/explain",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "The photo with its Grad-CAM heatmap over it."},
            **error_responses(400, 401, 408, 413, 415, 422, 501, 503),
        },
        openapi_extra=image_request_body(max_files=1, many=False),
        summary="Show where the model looks (Grad-CAM)",
    )
    async def explain(request: Request) -> Response:
        from catsdogs.service.explaining import unavailable_error
        from catsdogs.service.uploads import check_image

        info = state.require_ready()
        if state.explainer is None:
            raise unavailable_error(state.explain_reason)
        (upload,) = await _read_uploads(request, settings, max_files=1)
        check_image(upload.data, max_pixels=info.max_pixels)
        explanation = await state.explainer.explain(upload.data)
        return Response(
            explanation.png,
            media_type="image/png",
            headers={
                "X-Catsdogs-Label": explanation.label.encode("ascii", "replace").decode(),
                "X-Catsdogs-Probability": f"{explanation.probability:.6f}",
                "Cache-Control": "no-store",
            },
        )

    return router


def _operations_router(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers")
    async def healthz() -> HealthResponse:
        return HealthResponse(status="ok")

    @router.get(
        "/readyz",
        response_model=ReadyResponse,
        responses=error_responses(503),
        summary="Readiness: the model is loaded and warm",
    )
    async def readyz() -> ReadyResponse:
        info = state.require_ready()
        return ReadyResponse(status="ready", model=info.name, sha256=info.sha256)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    return router


def _key_checker(api_key: str):
    expected = api_key.encode("utf-8")

    async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        given = credentials.credentials.encode("utf-8") if credentials is not None else b""
        # compare_digest takes the same time whatever the first differing byte, so timing reveals nothing.
        if credentials is None or not hmac.compare_digest(given, expected):
            raise ServiceError(
                401,
                "unauthorized",
                f"This server needs an API key: send the header `Authorization: Bearer <key>` with the key its "
                f"operator set in {API_KEY_VARIABLE}.",
                received={"authorization": "missing" if credentials is None else "wrong key"},
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_key


async def _read_uploads(request: Request, settings: ServiceSettings, *, max_files: int) -> list[Upload]:
    kind = request_kind(request)
    body = await read_body(request, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s)
    if kind == "raw":
        return [Upload("upload", body)]
    return await parse_multipart(body, request.headers, max_files=max_files)


def _summary(info) -> ModelSummary:
    return ModelSummary(name=info.name, sha256=info.sha256, format=info.format, precision=info.precision)


def _all_failed(errors: list[ServiceError], uploads: list[Upload]) -> ServiceError:
    first = errors[0]
    if len(errors) == 1:
        return first
    reasons = "; ".join(f"{upload.name}: {error.code}" for upload, error in zip(uploads, errors))
    combined = ServiceError(
        first.status,
        first.code,
        f"None of the {len(errors)} photos could be used ({reasons[:500]}). The first one's problem: {first.message}",
        received={"files": len(errors)},
        headers=first.headers,
    )
    # Every photo was counted as it was refused; the combined answer is not counted again.
    combined.counted = True
    return combined


def _log_progress(line: str) -> None:
    import logging

    logging.getLogger("catsdogs.service").info(line)
