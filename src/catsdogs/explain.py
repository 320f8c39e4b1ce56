"""`explain_images`: what `catsdogs explain` does: Grad-CAM overlays and feature-map grids for photos.

Each photo takes the prediction path (`Predictor.load_image`), so the
explanation is of exactly the pixels the model classifies. A photo that cannot
be read gets an error entry and the others go on.
"""

import dataclasses
import re
from pathlib import Path

from catsdogs import interpret, report_plots
from catsdogs.choices import DEFAULT_THRESHOLD
from catsdogs.errors import CatsdogsError
from catsdogs.runs import RunDir


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The files written for one photo, or why there are none.

    Attributes:
        source: the photo's path.
        label: the predicted class; None on error.
        probability: the probability of `label`; None on error.
        gradcam_path: the Grad-CAM overlay PNG; None on error.
        feature_map_paths: one PNG per explained layer.
        error: why the photo could not be explained; None on success.
    """

    source: str
    label: str | None = None
    probability: float | None = None
    gradcam_path: Path | None = None
    feature_map_paths: tuple = ()
    error: str | None = None


def default_explain_dir(run_dir):
    """Return where `explain` writes by default: `<run>/figures/explain`."""
    return RunDir(run_dir).explain_dir


def explain_images(
    run_dir, images, *, layer=None, out_dir=None, feature_layers=None, feature_maps=True, threshold=DEFAULT_THRESHOLD
):
    """Write a Grad-CAM overlay and feature-map grids for each photo.

    Args:
        run_dir: the run folder.
        images: photo paths.
        layer: the layer Grad-CAM explains (name or "nested/name"); default the last convolution.
        out_dir: where the PNGs go; default `<run>/figures/explain`.
        feature_layers: layers whose feature maps to draw; default a spread of convolutions.
        feature_maps: whether to draw feature maps at all.
        threshold: decision threshold on P(class 1), for two classes.

    Returns:
        A list of `Explanation`, one per photo, in order.

    Raises:
        CatsdogsError: for an unknown layer (the message lists the valid ones), before any photo is read.
    """
    from catsdogs.images import load_rgb
    from catsdogs.inference import Predictor, decide

    predictor = Predictor.from_run_dir(run_dir, threshold=threshold)
    model = predictor.model
    # Check the layer names first, so a typo fails at once rather than after the first photo.
    layer_path = interpret.resolve_layer(model, layer)[0] if layer else interpret.default_gradcam_layer(model)
    for name in feature_layers or ():
        interpret.resolve_layer(model, name)
    out_dir = Path(out_dir) if out_dir is not None else default_explain_dir(run_dir)
    explanations = []
    for source in images:
        try:
            pixels = predictor.load_image(source)
            original = load_rgb(source)
        except (CatsdogsError, OSError) as error:
            explanations.append(Explanation(str(source), error=getattr(error, "reason", None) or str(error)))
            continue
        probabilities = predictor.predict_pixels(pixels[None])[0]
        label_index = int(decide(probabilities, threshold))
        label, probability = predictor.class_names[label_index], float(probabilities[label_index])
        heatmaps, _, _ = interpret.grad_cam(model, pixels, layer=layer_path, class_index=label_index)
        stem = _safe_name(Path(source).stem)
        title = f"{Path(source).name}: predicted {label} ({probability:.0%})"
        # The heatmap is stretched back over the original photo, as the model's resize squeezed it.
        gradcam_path = report_plots.save_figure(
            report_plots.gradcam_figure(original, heatmaps[0], title=title, layer=layer_path),
            out_dir / f"{stem}_gradcam.png",
        )
        feature_paths = []
        if feature_maps:
            activations = interpret.feature_maps(model, pixels, layer_names=feature_layers)
            for path, values in activations.items():
                figure = report_plots.feature_map_figure(values, layer=path)
                feature_paths.append(
                    report_plots.save_figure(figure, out_dir / f"{stem}_features_{_safe_name(path)}.png")
                )
        explanations.append(Explanation(str(source), label, probability, gradcam_path, tuple(feature_paths)))
    return explanations


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "image"
