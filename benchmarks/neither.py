"""Can the ImageNet head say "not a cat or a dog"? A threshold on its cat-and-dog mass, measured (issue 13).

The pretrained EfficientNet-Lite0 behind zero-shot predict (`inference.zero_shot`) has 1,000 ImageNet
classes. The softmax mass it puts on the dog classes (151-268) and the cat classes says whether a photo
shows either; a photo whose mass is under a threshold would be answered "not a cat or a dog". Two variants
of "cat classes": the domestic cats only (281-285), and the cat-like ones (281-293, wild cats included,
where photos of house cats also land).

For each variant it
- (a) CHOOSES the threshold on the validation photos (Kaggle numbers 1000-1499 per class, 1,000 photos):
  the highest threshold that turns away at most 0.5% of them (mass strictly below it);
- (b) MEASURES the turn-away rate at that threshold on the large test (numbers 2000-4999 per class,
  6,000 photos no recipe was chosen on), with its 95% Wilson interval;
- (c) counts how many photos that show neither are caught: every image bundled in the scikit-image wheel
  (no download), except `chelsea`, its cat. That set is small (about twenty images), some of them are not
  photographs (a logo, a silhouette, a synthetic chessboard), and each one is listed with its mass and its
  top ImageNet class. Grayscale and transparent images go through `prepare`'s normalisation
  (`images.clean_image_bytes`: grayscale to RGB, transparency composited on white), then the same
  decode and resize as every photo.

The network runs through `training.features.FeatureExtractor`: ONNX Runtime when it agrees with Keras on
the first batch (engine "auto"), else Keras. Prints a table and appends a JSON line to
benchmarks/results/neither.jsonl. Needs scikit-image's bundled images (for this benchmark only): an
installed scikit-image, or --bundled DIR, the skimage/data/ folder unzipped from its wheel
(`pip download scikit-image --no-deps`).

Usage:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/neither.py [--photos DIR] [--engine auto] [--json FILE]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "neither.jsonl"
SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
VALIDATION_NUMBERS = range(1000, 1500)
LARGE_TEST_NUMBERS = range(2000, 5000)
# Issue 13: the rule may wrongly turn away at most this share of real cat and dog photos.
TARGET_TURN_AWAY = 0.005
IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
DOG_CLASSES = list(range(151, 269))
VARIANTS = {
    "domestic_cats": DOG_CLASSES + list(range(281, 286)),
    "cat_like": DOG_CLASSES + list(range(281, 294)),
}
# What each image bundled in the scikit-image wheel shows, and whether it is a photograph.
# Files not listed here are still measured, as "not described".
BUNDLED_IMAGES = {
    "astronaut.png": ("astronaut Eileen Collins, portrait", True),
    "brick.png": ("brick wall, close up (grayscale)", True),
    "camera.png": ("man with a camera on a tripod (grayscale)", True),
    "cell.png": ("cell under a microscope (grayscale)", True),
    "chessboard_GRAY.png": ("chessboard pattern (grayscale)", False),
    "chessboard_RGB.png": ("chessboard pattern", False),
    "clock_motion.png": ("wall clock, motion-blurred (grayscale)", True),
    "coffee.png": ("cup of coffee on a saucer", True),
    "coins.png": ("Greek coins (grayscale)", True),
    "color.png": ("colour test chart", False),
    "grass.png": ("grass, close up (grayscale)", True),
    "gravel.png": ("gravel, close up (grayscale)", True),
    "horse.png": ("horse silhouette, black on white", False),
    "hubble_deep_field.jpg": ("Hubble deep field: galaxies", True),
    "ihc.png": ("immunohistochemistry tissue stain, microscope", True),
    "logo.png": ("scikit-image logo", False),
    "microaneurysms.png": ("retina close up (grayscale)", True),
    "moon.png": ("surface of the moon (grayscale)", True),
    "motorcycle_left.png": ("motorcycle, left view of a stereo pair", True),
    "motorcycle_right.png": ("motorcycle, right view of a stereo pair", True),
    "page.png": ("scanned page of text (grayscale)", True),
    "phantom.png": ("Shepp-Logan phantom, synthetic", False),
    "retina.jpg": ("human retina, fundus photograph", True),
    "rocket.jpg": ("rocket on its launch pad", True),
    "text.png": ("hand-written and printed text (grayscale)", True),
}
# The cat in the wheel: not "neither".
LEFT_OUT = {"chelsea.png"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def kaggle_paths(folder, numbers):
    """Return (paths, labels): cat.N.jpg (label 0) then dog.N.jpg (label 1) for every N in `numbers`."""
    paths, labels = [], []
    for label, prefix in enumerate(("cat", "dog")):
        for number in numbers:
            path = Path(folder) / f"{prefix}.{number}.jpg"
            if not path.is_file():
                raise SystemExit(f"Missing photo {path}: pass --photos, the folder of cat.N.jpg and dog.N.jpg")
            paths.append(path)
            labels.append(label)
    return paths, numpy.asarray(labels)


def skimage_data_dir(given=None):
    """The folder of images bundled in scikit-image: `given`, else the installed package's, found without importing."""
    import importlib.util

    if given is not None:
        return Path(given)
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "scikit-image is not installed. Install it into a scratch folder (`pip download scikit-image --no-deps` "
            "and unzip its skimage/data/), then pass that folder with --bundled DIR"
        )
    return Path(spec.origin).parent / "data"


def bundled_images(folder, data_dir):
    """Copy every image bundled in scikit-image (bar the cat) into `folder`, normalised as `prepare` does.

    Returns:
        A list of dicts {name, shows, photograph, note, path}.
    """
    from catsdogs.images import clean_image_bytes

    images = []
    for source in sorted(data_dir.iterdir()):
        if source.suffix.lower() not in IMAGE_SUFFIXES or source.name in LEFT_OUT:
            continue
        clean = clean_image_bytes(source.read_bytes(), max_pixels=100_000_000, min_side=1)
        target = Path(folder) / f"{source.stem}{clean.extension}"
        target.write_bytes(clean.data)
        shows, photograph = BUNDLED_IMAGES.get(source.name, ("not described", None))
        images.append(
            {"name": source.name, "shows": shows, "photograph": photograph, "note": clean.note, "path": target}
        )
    return images


def softmax(logits):
    """Row-wise softmax in float64."""
    logits = numpy.asarray(logits, dtype=numpy.float64)
    shifted = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def choose_threshold(masses, target):
    """Return the highest threshold that turns away at most `target` of `masses` (turned away: mass < threshold)."""
    ordered = numpy.sort(numpy.asarray(masses))
    allowed = int(numpy.floor(target * len(ordered) + 1e-9))
    return float(ordered[allowed])


def turned_away(masses, threshold):
    """Return {count, total, rate, interval_95}: the photos whose mass is under `threshold`."""
    from catsdogs.evaluation.metrics import wilson_interval

    masses = numpy.asarray(masses)
    count = int(numpy.sum(masses < threshold))
    low, high = wilson_interval(count, len(masses))
    return {"count": count, "total": len(masses), "rate": count / len(masses), "interval_95": [low, high]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=SOURCE, help="Folder of cat.N.jpg and dog.N.jpg.")
    parser.add_argument("--engine", default="auto", choices=("auto", "onnxruntime", "keras"))
    parser.add_argument("--json", type=Path, default=RESULTS_FILE, help="JSON lines file to append to.")
    parser.add_argument("--bundled", type=Path, help="scikit-image's data folder (default: the installed package's).")
    arguments = parser.parse_args()

    from catsdogs.models.lite_weights import pretrained_efficientnet_lite0
    from catsdogs.training.features import FeatureExtractor, extract

    packages = ("tensorflow-cpu", "keras", "numpy", "pillow", "onnxruntime", "scikit-image")
    print(describe_machine(packages=packages))
    model = pretrained_efficientnet_lite0(include_top=True, input_shape=(*IMAGE_SIZE, 3))
    extractor = FeatureExtractor(model, image_size=IMAGE_SIZE, output_names=["logits"], engine=arguments.engine)

    def probabilities(paths):
        return softmax(extract(extractor, paths, batch_size=BATCH_SIZE)[0])

    started = time.monotonic()
    validation_paths, validation_labels = kaggle_paths(arguments.photos, VALIDATION_NUMBERS)
    test_paths, test_labels = kaggle_paths(arguments.photos, LARGE_TEST_NUMBERS)
    validation = probabilities(validation_paths)
    print(f"engine: {extractor.engine}; validation: {len(validation_paths)} photos")
    test = probabilities(test_paths)
    print(f"large test: {len(test_paths)} photos")
    with tempfile.TemporaryDirectory() as folder:
        images = bundled_images(folder, skimage_data_dir(arguments.bundled))
        neither = probabilities([image["path"] for image in images])
    seconds = time.monotonic() - started

    photograph = numpy.asarray([image["photograph"] is True for image in images])
    result = {
        "benchmark": "neither",
        "machine": machine_info(packages=packages),
        "engine": extractor.engine,
        "image_size": list(IMAGE_SIZE),
        "target_turn_away": TARGET_TURN_AWAY,
        "validation": {"numbers": [VALIDATION_NUMBERS.start, VALIDATION_NUMBERS.stop - 1], "photos": len(validation)},
        "large_test": {"numbers": [LARGE_TEST_NUMBERS.start, LARGE_TEST_NUMBERS.stop - 1], "photos": len(test)},
        "neither_set": {"images": len(images), "photographs": int(photograph.sum()), "left_out": sorted(LEFT_OUT)},
        "variants": {},
        "neither_images": [],
        "seconds": round(seconds, 1),
        "seconds_note": "not a timing: the machine was shared",
    }
    header = f"{'variant':<14} {'threshold':>10} {'valid. away':>12} {'large test away (95% CI)':>34} {'caught':>9}"
    print("\n" + header + f" {'photos caught':>14}")
    for name, classes in VARIANTS.items():
        validation_mass = validation[:, classes].sum(axis=1)
        test_mass = test[:, classes].sum(axis=1)
        neither_mass = neither[:, classes].sum(axis=1)
        threshold = choose_threshold(validation_mass, TARGET_TURN_AWAY)
        chosen = turned_away(validation_mass, threshold)
        measured = turned_away(test_mass, threshold)
        caught = int(numpy.sum(neither_mass < threshold))
        caught_photographs = int(numpy.sum((neither_mass < threshold) & photograph))
        by_class = {
            class_name: turned_away(test_mass[test_labels == label], threshold)
            for label, class_name in enumerate(("cats", "dogs"))
        }
        result["variants"][name] = {
            "classes": f"151-268 and {classes[len(DOG_CLASSES)]}-{classes[-1]}",
            "threshold": threshold,
            "validation_turned_away": chosen,
            "validation_mass_quantiles": {
                str(q): float(numpy.quantile(validation_mass, q)) for q in (0.001, 0.005, 0.01, 0.05, 0.5)
            },
            "large_test_turned_away": measured,
            "large_test_turned_away_by_class": by_class,
            "large_test_labels_turned_away": {
                "cats": int(numpy.sum((test_mass < threshold) & (test_labels == 0))),
                "dogs": int(numpy.sum((test_mass < threshold) & (test_labels == 1))),
            },
            "neither_caught": {"count": caught, "total": len(images)},
            "neither_photographs_caught": {"count": caught_photographs, "total": int(photograph.sum())},
        }
        low, high = measured["interval_95"]
        print(
            f"{name:<14} {threshold:>10.4f} {chosen['count']:>5}/{chosen['total']:<6} "
            f"{measured['count']:>5}/{measured['total']} = {measured['rate']:.3%} ({low:.2%}-{high:.2%})"
            f" {caught:>4}/{len(images):<4} {caught_photographs:>6}/{int(photograph.sum())}"
        )
    print(f"\n{'image':<24} {'photo':>5} {'domestic':>9} {'cat-like':>9} {'top class':>9}  shows")
    for index, image in enumerate(images):
        masses = {name: float(neither[index, classes].sum()) for name, classes in VARIANTS.items()}
        top_class = int(numpy.argmax(neither[index]))
        entry = {
            "name": image["name"],
            "shows": image["shows"],
            "photograph": image["photograph"],
            "normalised": image["note"],
            "mass": masses,
            "top_class": top_class,
            "top_probability": float(neither[index, top_class]),
            "caught": {name: masses[name] < result["variants"][name]["threshold"] for name in VARIANTS},
        }
        result["neither_images"].append(entry)
        print(
            f"{image['name']:<24} {str(image['photograph']):>5} {masses['domestic_cats']:>9.4f} "
            f"{masses['cat_like']:>9.4f} {top_class:>9}  {image['shows']}"
        )
    append_jsonl(arguments.json, result)
    print(f"\nappended to {arguments.json}")


if __name__ == "__main__":
    main()
