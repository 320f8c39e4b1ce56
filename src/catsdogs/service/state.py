"""The state of one service: its model, its workers and its readiness, loaded once and shared by every request.

The app's lifespan starts `ServiceState.load` in a thread and does not wait
for it, so the server listens at once: `/healthz` answers from the start and
`/readyz` says 503 until the model is checked, loaded and warm, which is what
a load balancer needs for a rolling restart. A model that cannot be loaded (a
tampered file, say) is reported through `on_load_failure`, which `server`
uses to stop with a non-zero exit status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from catsdogs.errors import CatsdogsError
from catsdogs.images import ImageError
from catsdogs.runtime import OnnxPredictor
from catsdogs.service.batching import MicroBatcher
from catsdogs.service.errors import REJECTION_REASONS, RETRY_AFTER_SECONDS, ServiceError
from catsdogs.service.explaining import GradCamExplainer, explain_available
from catsdogs.service.metrics import ServiceMetrics
from catsdogs.service.model import ModelInfo, export_in_child_process, load_model, resolve_source
from catsdogs.service.settings import ServiceSettings
from catsdogs.service.uploads import Upload, check_image

logger = logging.getLogger("catsdogs.service")


class ServiceState:
    """One service's model, workers, decoding threads, metrics and readiness.

    Args:
        source: RUN_OR_EXPORT: a run folder or an export folder.
        settings: the service's limits and tuning.
        progress: called with a line of progress for the operator (loading, exporting, ready).
        on_load_failure: called with the message when the model cannot be loaded.
        make_export: makes a run's export when it is missing or stale (default: `catsdogs export` in a
            child process).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        settings: ServiceSettings,
        progress: Callable[[str], None],
        on_load_failure: Callable[[str], None] | None = None,
        make_export: Callable[[Path, str], None] = export_in_child_process,
    ) -> None:
        self.source = Path(source)
        self.settings = settings
        self.progress = progress
        self.on_load_failure = on_load_failure
        self.make_export = make_export
        self.metrics = ServiceMetrics()
        self.info: ModelInfo | None = None
        self.failure: str | None = None
        self.explainer: GradCamExplainer | None = None
        self.explain_reason = "the model is not loaded yet."
        self.ready = threading.Event()
        self.loaded = threading.Event()
        self._predictor: OnnxPredictor | None = None
        self._batcher: MicroBatcher | None = None
        self._decoder = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.decode_thread_count, thread_name_prefix="catsdogs-decode"
        )
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ life cycle

    def start_loading(self) -> threading.Thread:
        """Load the model in a daemon thread (a hung load never keeps the process alive) and return it."""
        thread = threading.Thread(target=self.load, name="catsdogs-load", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        """Resolve, check, load and warm up the model, start the workers, then report ready (or the failure)."""
        started = time.perf_counter()
        try:
            source = resolve_source(
                self.source, precision=self.settings.precision, make_export=self.make_export, progress=self.progress
            )
            self.progress(f"Loading {source.export_dir} (SHA-256 check, {self.settings.worker_count} worker(s))")
            info, predictors = load_model(source, settings=self.settings)
            batcher = MicroBatcher(
                [predictor.predict_pixels for predictor in predictors],
                max_batch_size=self.settings.max_batch_size,
                batch_wait_ms=self.settings.batch_wait_ms,
                queue_size=self.settings.queue_size,
                queue_timeout_s=self.settings.queue_timeout_s,
                metrics=self.metrics,
            )
        except Exception as error:
            message = str(error) if isinstance(error, CatsdogsError) else f"{type(error).__name__}: {error}"
            logger.error("The model cannot be served: %s", message)
            self.failure = message
            self.loaded.set()
            if self.on_load_failure is not None:
                self.on_load_failure(message)
            return
        with self._lock:
            if self._closed:
                self.loaded.set()
                return
            self.info, self._predictor, self._batcher = info, predictors[0], batcher
            if explain_available(source.run_dir):
                self.explainer = GradCamExplainer(source.run_dir, threshold=info.threshold, max_pixels=info.max_pixels)
            else:
                self.explain_reason = (
                    "the served export is not known to come from a run folder's current model."
                    if source.run_dir is None
                    else "TensorFlow, Keras or matplotlib is not installed."
                )
            batcher.start()
        if not info.verified:
            self.progress("Warning: this export did not pass its check against the Keras model (export.json).")
        self.progress(
            f"Ready: {info.name} ({info.precision}, SHA-256 {info.sha256[:12]}...) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        self.ready.set()
        self.loaded.set()

    def close(self) -> None:
        """Stop the workers and threads; requests still waiting are answered 503."""
        with self._lock:
            self._closed = True
            self.ready.clear()
            batcher, explainer = self._batcher, self.explainer
        if batcher is not None:
            batcher.stop()
        if explainer is not None:
            explainer.close()
        self._decoder.shutdown(wait=False, cancel_futures=True)

    def require_ready(self) -> ModelInfo:
        """Return the model's info, or raise 503 not_ready while it loads (or after it failed to)."""
        if self.info is not None and self.ready.is_set():
            return self.info
        if self.failure is not None:
            raise ServiceError(
                503,
                "not_ready",
                f"The model could not be loaded, so nothing can be predicted: {self.failure}",
                received={"source": str(self.source)},
            )
        raise ServiceError(
            503,
            "not_ready",
            "The model is still loading and warming up. Try again in a moment; GET /readyz answers 200 once "
            "it is ready.",
            received={"source": self.source.name},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    # ------------------------------------------------------------------ predicting

    async def predict_upload(self, upload: Upload) -> tuple[dict, ServiceError | None]:
        """Check, decode and predict one upload; return (its prediction entry, its error or None).

        A bad photo gives an entry with `error`, never an exception, so the other photos of a request are
        still answered. The rejection metric counts each refused photo once.
        """
        started = time.perf_counter()
        try:
            probabilities = await self._probabilities(upload.data)
        except ServiceError as error:
            if not error.counted and error.code in REJECTION_REASONS:
                self.metrics.count_rejection(REJECTION_REASONS[error.code])
                error.counted = True
            entry = {"file": upload.name, "label": None, "probability": None, "probabilities": None}
            entry.update(answer=None, abstained=False, reason=None, calibrated_probability=None)
            entry.update(error=error.detail(), seconds=time.perf_counter() - started)
            return entry, error
        # The predictor's own decision rule, with the export's abstain rule (abstain.json) when it has one.
        prediction = self._predictor.to_prediction(upload.name, probabilities)
        self.metrics.predictions.labels(label=prediction.label).inc()
        entry = {"file": upload.name, **dataclasses.asdict(prediction)}
        del entry["source"]
        entry.update(error=None, seconds=time.perf_counter() - started)
        return entry, None

    async def _probabilities(self, data):
        check_image(data, max_pixels=self.info.max_pixels)
        with self._batcher.admit():
            loop = asyncio.get_running_loop()
            try:
                pixels = await loop.run_in_executor(self._decoder, self._predictor.load_image, data)
            except ImageError as error:
                raise ServiceError(422, "bad_image", str(error), received={"reason": error.reason}) from None
            except CatsdogsError as error:
                raise ServiceError(422, "bad_image", str(error)) from None
            except Exception as error:
                # A decoder failure on hostile bytes is the photo's fault, never the server's.
                raise ServiceError(
                    422,
                    "bad_image",
                    f"The image cannot be decoded ({type(error).__name__}). Expected a complete JPEG, PNG, WebP, "
                    "GIF or BMP file; re-export or replace it.",
                    received={"reason": f"cannot decode image: {type(error).__name__}"},
                ) from None
            return await self._batcher.submit(pixels)
