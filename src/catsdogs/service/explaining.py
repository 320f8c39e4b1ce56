"""Grad-CAM for `POST /v1/explain`: a PNG of the photo with the model's attention laid over it.

Grad-CAM needs gradients, so it runs the run folder's Keras model, never the
ONNX export. It is offered only when the served model came from a run folder
(whose model.keras is the export's source, by SHA-256) and TensorFlow, Keras
and matplotlib are installed; TensorFlow is imported on the first request
that asks for it, not before. One explanation runs at a time, with at most
one more waiting, so a burst of Grad-CAM requests cannot starve prediction.
The overlay reuses the project's own pieces: `Predictor.load_image` (the
pixels the model classifies), `interpret.grad_cam` and
`report_plots.heatmap_overlay`, as `catsdogs explain` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import threading
from pathlib import Path

import numpy
from PIL import Image

from catsdogs.errors import CatsdogsError
from catsdogs.images import ImageError, encode_png, load_rgb
from catsdogs.service.errors import ServiceError, overloaded

# What Grad-CAM needs beyond the base install: the model, its gradients and the colour map.
NEEDED_MODULES = ("tensorflow", "keras", "matplotlib")
# The overlay is a preview: a photo larger than this on its longer side is shrunk first.
OVERLAY_LONGER_SIDE = 640
# One explanation runs and at most this many more wait; beyond them, 503 overloaded.
_MAXIMUM_WAITING = 1


@dataclasses.dataclass(frozen=True)
class Explanation:
    """A Grad-CAM overlay and the prediction it explains.

    Attributes:
        png: the overlay as PNG bytes.
        label: the predicted class.
        probability: the probability of `label`.
    """

    png: bytes
    label: str
    probability: float


def explain_available(run_dir: Path | None) -> bool:
    """Whether Grad-CAM can run: a run folder is known and TensorFlow, Keras and matplotlib are installed."""
    return run_dir is not None and all(importlib.util.find_spec(name) is not None for name in NEEDED_MODULES)


class GradCamExplainer:
    """Loads a run's Keras model on first use and explains one photo at a time.

    Args:
        run_dir: the run folder whose model the served export was made from.
        threshold: the decision threshold on the second class's probability (two classes).
        max_pixels: largest accepted photo, in pixels.
    """

    def __init__(self, run_dir: Path, *, threshold: float, max_pixels: int) -> None:
        self.run_dir = Path(run_dir)
        self.threshold = threshold
        self.max_pixels = max_pixels
        self._predictor = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="catsdogs-gradcam")
        self._lock = threading.Lock()
        self._pending = 0

    async def explain(self, data: bytes) -> Explanation:
        """Return the Grad-CAM overlay of one photo's bytes.

        Raises:
            ServiceError: 422 bad_image for a photo that cannot be used, 501 explain_unavailable when the
                model cannot be explained, 503 overloaded when explanations are already running and waiting.
        """
        with self._lock:
            if self._pending > _MAXIMUM_WAITING:
                raise overloaded("A Grad-CAM explanation is already running and another is waiting.")
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._explain, data)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        """Stop the explanation thread once the running explanation ends."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load(self):
        if self._predictor is None:
            from catsdogs.inference import Predictor

            # Grad-CAM needs the Keras model only: no abstain rule, no ImageNet head.
            self._predictor = Predictor.from_run_dir(self.run_dir, threshold=self.threshold, abstain=False)
            self._predictor.max_pixels = min(self._predictor.max_pixels, self.max_pixels)
        return self._predictor

    def _explain(self, data):
        from catsdogs import interpret, report_plots
        from catsdogs.runtime import decide

        try:
            predictor = self._load()
        except CatsdogsError as error:
            raise _unavailable(str(error)) from None
        try:
            pixels = predictor.load_image(data)
            original = load_rgb(data, max_pixels=predictor.max_pixels, min_side=predictor.min_side)
        except ImageError as error:
            raise ServiceError(422, "bad_image", str(error), received={"reason": error.reason}) from None
        except CatsdogsError as error:
            raise ServiceError(422, "bad_image", str(error)) from None
        probabilities = predictor.predict_pixels(pixels[None])[0]
        index = int(decide(probabilities, self.threshold))
        try:
            heatmaps, _, _ = interpret.grad_cam(predictor.model, pixels, class_index=index)
        except CatsdogsError as error:
            raise _unavailable(str(error)) from None
        overlay = report_plots.heatmap_overlay(_shrink(original), heatmaps[0])
        return Explanation(encode_png(overlay), predictor.class_names[index], float(probabilities[index]))


def _shrink(pixels):
    height, width = pixels.shape[:2]
    scale = OVERLAY_LONGER_SIDE / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return numpy.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS), dtype=numpy.uint8)


def _unavailable(message):
    return ServiceError(
        501,
        "explain_unavailable",
        f"Grad-CAM cannot explain this model: {message}",
    )


def unavailable_error(reason: str) -> ServiceError:
    """The 501 answer when Grad-CAM is not offered, saying why and how to get it."""
    return ServiceError(
        501,
        "explain_unavailable",
        f"Grad-CAM is not available on this server: {reason} It needs the run folder the export was made from "
        "(serve RUN rather than RUN/export/onnx copied elsewhere) and TensorFlow, Keras and matplotlib "
        "(pip install 'catsdogs[train]').",
        received={"reason": reason},
    )
