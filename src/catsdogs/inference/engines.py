"""Which engine runs a run folder's model: ONNX Runtime where it agrees with Keras, else Keras.

`predict RUN`, `evaluate RUN` and the report that `train` writes all predict
through `open_engine`, which returns a `ModelRunner`: a callable from float32
pixel batches to the model's output, which says what it runs on and why.

For "auto" and "onnxruntime" the runner looks, in order, for:

1. The run's own export, RUN/export/onnx/ (made by `catsdogs export`). It is
   used as it is when it passes its SHA-256 check, was verified against Keras
   on the whole validation split, is float32, and was exported from this very
   model.keras (export.json's source-model SHA-256). Nothing is converted.
2. Otherwise the Keras model is converted to ONNX in a temporary folder, as
   training's feature extraction does, and the first batch it runs is checked
   against Keras with `runtime.agreement`'s rule. "auto" falls back to Keras,
   with a logged warning, when they differ.

Converting the demo's EfficientNet-Lite0 took 18.7 s on two busy cores, and
ONNX Runtime then saved 0.085 s per photo at 288 px (9.7 against 5.3 photos/s
over the 1,000 test photos; benchmarks/runtime_agreement.py measures both): it
pays for itself after about 220 photos. So "auto" converts only for a call of
at least `CONVERSION_MIN_IMAGES` photos; fewer run in Keras, and the reason says how to get ONNX Runtime at
once (`catsdogs export RUN`). "onnxruntime" always converts, and fails with a
`CatsdogsError` when ONNX Runtime is missing, the conversion fails or the
check disagrees. "keras" never imports ONNX Runtime or the converter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
import typing
from collections.abc import Sequence

import numpy

from catsdogs.choices import INFERENCE_ENGINES
from catsdogs.errors import CatsdogsError
from catsdogs.runtime.agreement import AGREEMENT_TOLERANCE, agrees, relative_difference

if typing.TYPE_CHECKING:
    import keras
    import onnxruntime

    from catsdogs.runs import RunDir

logger = logging.getLogger("catsdogs.inference.engines")

# Below this many photos in one call, "auto" runs Keras rather than convert the model (see the module docstring).
CONVERSION_MIN_IMAGES = 200
# Images of the first batch that Keras runs again to check ONNX Runtime, as feature extraction checks.
CHECK_IMAGES = 4
# Where a `ModelRunner`'s model came from.
SOURCE_EXPORT = "export"
SOURCE_CONVERTED = "converted"
SOURCE_KERAS = "keras"


def check_engine(engine: str) -> str:
    """Return `engine` if it is one of `choices.INFERENCE_ENGINES`.

    Raises:
        CatsdogsError: for any other value.
    """
    if engine not in INFERENCE_ENGINES:
        raise CatsdogsError(
            f"Unknown inference engine. Choose one of {', '.join(INFERENCE_ENGINES)} (auto: ONNX Runtime where it "
            f"agrees with Keras). Received: engine={engine!r}"
        )
    return engine


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    """What runs a model, and why: the record a caller logs and stores beside its results.

    Attributes:
        engine: "onnxruntime" or "keras".
        requested: what was asked for: "auto", "onnxruntime" or "keras".
        source: "export" (RUN/export/onnx), "converted" (converted for this process) or "keras".
        reason: one sentence saying why.
        difference: ONNX Runtime's relative difference from Keras on the checked batch; None when unchecked.
    """

    engine: str
    requested: str
    source: str
    reason: str
    difference: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ModelRunner:
    """Runs a run's model on float32 pixel batches (n, height, width, 3) in 0..255, in the chosen engine.

    Build it with `open_engine`. Until its first call a converted model is provisional: that call
    runs the first `CHECK_IMAGES` images in Keras too, and the runner stays on ONNX Runtime only if
    they agree (for "auto"; "onnxruntime" raises instead).

    Args:
        model: the Keras model; always kept, for the check and the fallback.
        choice: the `EngineChoice` so far.
        session: the ONNX Runtime session, or None for Keras.
        check_first_batch: compare the first batch with Keras before trusting the session.
    """

    def __init__(
        self,
        model: keras.Model,
        choice: EngineChoice,
        *,
        session: onnxruntime.InferenceSession | None = None,
        check_first_batch: bool = False,
    ) -> None:
        self.model = model
        self.choice = choice
        self.session = session
        self.input_name = session.get_inputs()[0].name if session is not None else None
        self._check_pending = session is not None and check_first_batch
        if not self._check_pending:
            _log_choice(choice)

    @property
    def engine(self) -> str:
        """ "onnxruntime" or "keras": what runs the model now."""
        return self.choice.engine

    def __call__(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Return the model's output for a float32 batch (n, height, width, 3) in 0..255."""
        pixels = numpy.ascontiguousarray(pixels, dtype=numpy.float32)
        if self.session is None:
            return numpy.asarray(self.model.predict_on_batch(pixels))
        output = self.session.run(None, {self.input_name: pixels})[0]
        if self._check_pending:
            self._check_pending = False
            if not self._check(pixels, output):
                return numpy.asarray(self.model.predict_on_batch(pixels))
        return output

    def _check(self, pixels, output):
        """Compare the first images with Keras; keep ONNX Runtime if they agree, else fall back or raise."""
        expected = numpy.asarray(self.model.predict_on_batch(pixels[:CHECK_IMAGES]))
        difference = relative_difference(expected, output[:CHECK_IMAGES])
        if agrees(difference):
            self.choice = dataclasses.replace(
                self.choice,
                difference=difference,
                reason=f"{self.choice.reason}; its first batch agrees with Keras (relative difference "
                f"{difference:.1g})",
            )
            _log_choice(self.choice)
            return True
        if self.choice.requested == "onnxruntime":
            raise CatsdogsError(
                f"The onnxruntime engine was asked for, but the model converted to ONNX differs from Keras by "
                f"{difference:.2g} (relative) on its first batch, more than {AGREEMENT_TOLERANCE:g}. Use "
                f"--engine keras (or auto, which falls back to Keras), and report the model if it persists. "
                f"Received: engine=onnxruntime, difference={difference:.3g}"
            )
        self.session, self.input_name = None, None
        self.choice = EngineChoice(
            engine="keras",
            requested=self.choice.requested,
            source=SOURCE_KERAS,
            reason=(
                f"ONNX Runtime differed from Keras by {difference:.2g} (relative) on the first batch, more than "
                f"{AGREEMENT_TOLERANCE:g}, so Keras runs the model"
            ),
            difference=difference,
        )
        logger.warning("Inference engine: Keras (%s).", self.choice.reason)
        return False


def keras_runner(model: keras.Model, *, requested: str = "keras", reason: str | None = None) -> ModelRunner:
    """Return a `ModelRunner` that calls the Keras model, with `reason` (default: Keras was asked for)."""
    choice = EngineChoice(
        engine="keras", requested=requested, source=SOURCE_KERAS, reason=reason or "the keras engine was asked for"
    )
    return ModelRunner(model, choice)


def open_engine(
    run_dir: RunDir,
    model: keras.Model,
    *,
    engine: str = "auto",
    image_size: Sequence[int],
    model_sha256: str,
    images: int | None = None,
) -> ModelRunner:
    """Choose what runs a run folder's model and return it ready to call (see the module docstring).

    Args:
        run_dir: the run folder, whose RUN/export/onnx/ is used when it fits.
        model: the run's Keras model, already loaded.
        engine: "auto", "onnxruntime" or "keras".
        image_size: (height, width) the model takes.
        model_sha256: the SHA-256 of the run's model.keras, checked when the model was loaded.
        images: how many photos the caller is about to predict, when known: "auto" converts the model
            only for at least `CONVERSION_MIN_IMAGES`. None converts whatever the number.

    Returns:
        A `ModelRunner`.

    Raises:
        CatsdogsError: for an unknown engine, or for "onnxruntime" when ONNX Runtime is not installed or
            the conversion fails (a failed first-batch check raises later, from the runner's first call).
    """
    check_engine(engine)
    if engine == "keras":
        return keras_runner(model)
    try:
        import onnxruntime  # noqa: F401  (only to learn whether it is installed)
    except ImportError:
        return _unavailable(
            model,
            engine,
            "ONNX Runtime is not installed (pip install onnxruntime)",
            "Install it with `pip install onnxruntime`",
        )
    session, export_reason = _open_run_export(run_dir, image_size=image_size, model_sha256=model_sha256)
    if session is not None:
        choice = EngineChoice("onnxruntime", engine, SOURCE_EXPORT, export_reason)
        return ModelRunner(model, choice, session=session)
    if engine == "auto" and images is not None and images < CONVERSION_MIN_IMAGES:
        reason = (
            f"{export_reason}, and {images} photo(s) are too few to repay converting the model to ONNX "
            f"(fewer than {CONVERSION_MIN_IMAGES}); `catsdogs export RUN` lets ONNX Runtime start at once"
        )
        return keras_runner(model, requested=engine, reason=reason)
    session, seconds, failure = _convert(model, image_size)
    if session is None:
        return _unavailable(
            model,
            engine,
            f"{export_reason}, and converting the model to ONNX failed ({failure})",
            "Install the converter with `pip install tf2onnx onnx`",
        )
    reason = f"{export_reason}, so the model was converted to ONNX in {seconds:.1f} s"
    choice = EngineChoice("onnxruntime", engine, SOURCE_CONVERTED, reason)
    return ModelRunner(model, choice, session=session, check_first_batch=True)


def _unavailable(model, engine, reason, fix):
    if engine == "onnxruntime":
        raise CatsdogsError(
            f"The onnxruntime engine was asked for but cannot run this model: {reason}. {fix}, or use "
            f"--engine keras or auto. Received: engine=onnxruntime"
        )
    return keras_runner(model, requested=engine, reason=f"{reason}, so Keras runs the model")


def _open_run_export(run_dir, *, image_size, model_sha256):
    """Open RUN/export/onnx/ if it is a verified float32 export of this model; else (None, why not)."""
    from catsdogs.runtime.export_folder import read_export
    from catsdogs.runtime.onnx_predictor import open_session

    path = run_dir.export_dir("onnx")
    if not path.is_dir():
        return None, f"the run has no ONNX export ({path.relative_to(run_dir.path)})"
    try:
        contents = read_export(path, format_name="onnx")
        record = json.loads(contents.export_dir.record_path.read_text(encoding="utf-8"))
    except (CatsdogsError, OSError, ValueError) as error:
        return None, f"its ONNX export cannot be used ({_first_sentence(error)})"
    source_sha256 = (record.get("source_model") or {}).get("sha256")
    why_not = None
    if not contents.verified:
        why_not = "did not pass its check against Keras (verified false)"
    elif contents.precision != "float32":
        why_not = f"is {contents.precision}, not float32"
    elif source_sha256 != model_sha256:
        why_not = "was made from another model.keras (its source SHA-256 differs)"
    elif tuple(contents.image_size) != tuple(image_size) or contents.class_names != run_dir.read_labels():
        why_not = "takes another image size or other classes than the run"
    if why_not is not None:
        return None, f"its ONNX export {why_not}"
    try:
        session = open_session(contents.export_dir.artifact_path)
    except Exception as error:  # A damaged or foreign file leaves conversion or Keras, which still work.
        return None, f"its ONNX export does not open in ONNX Runtime ({type(error).__name__})"
    return session, f"the run's verified ONNX export of this model.keras ({path.relative_to(run_dir.path)})"


def _convert(model, image_size):
    """Convert the Keras model to ONNX in a temporary folder and open it: (session, seconds, None) or failure."""
    from catsdogs.runtime.onnx_predictor import open_session

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="catsdogs-engine-") as folder:
        path = os.path.join(folder, "model.onnx")
        try:
            # Keras exports a model only after it has been called once.
            model(numpy.zeros((1, *image_size, 3), numpy.float32))
            model.export(path, format="onnx", verbose=False)
            session = open_session(path)
        except Exception as error:  # Any conversion failure leaves Keras, which always works.
            return None, 0.0, f"{type(error).__name__}: {_first_sentence(error)}"
    return session, time.monotonic() - started, None


def _first_sentence(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _log_choice(choice):
    name = "ONNX Runtime" if choice.engine == "onnxruntime" else "Keras"
    logger.info("Inference engine: %s (%s).", name, choice.reason)
