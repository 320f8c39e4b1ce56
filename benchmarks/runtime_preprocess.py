"""How fast and how exact the TensorFlow-free image path is, against the training path, on real photos.

For each photo it runs, interleaved so that both see the same machine load:

- the runtime path: `runtime.load_pixels` (clean, Pillow decode, numpy resize);
- the training path: `images.clean_image_bytes`, then `images.decode_and_resize` (TensorFlow).

It prints photos per second for each path (median of the passes, with the min-max spread), and how far
the two results are apart: the largest and the mean difference per value, in 0..255 levels. Both sides
decode JPEGs with libjpeg's accurate integer DCT (training asks TensorFlow for it; Pillow always uses it),
so the expected difference is zero. (Until December 2026 training used TensorFlow's default fast DCT, and
plain JPEGs came out up to 4 levels apart: docs/benchmarks.md keeps that row.)

Usage:
    .venv/bin/python benchmarks/runtime_preprocess.py [--source DIR] [--photos 200] [--size 180] [--passes 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy

from catsdogs.images import clean_image_bytes, decode_and_resize
from catsdogs.runtime import load_pixels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"
LIMITS = {"max_pixels": 50_000_000, "min_side": 1}


def training_pixels(data: bytes, image_size: tuple[int, int]) -> numpy.ndarray:
    """Return the training path's pixels for a file's bytes."""
    clean = clean_image_bytes(data, **LIMITS)
    return decode_and_resize(clean.data, image_size).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="a folder of JPEG photos")
    parser.add_argument("--photos", type=int, default=200, help="how many photos, spread over the folder by name")
    parser.add_argument("--size", type=int, default=180, help="the square image size to resize to")
    parser.add_argument("--passes", type=int, default=3, help="timed passes of each path")
    arguments = parser.parse_args()

    files = sorted(arguments.source.glob("*.jpg"))
    files = files[:: max(len(files) // arguments.photos, 1)][: arguments.photos]
    photos = [path.read_bytes() for path in files]
    image_size = (arguments.size, arguments.size)
    # One untimed call each, so that TensorFlow's import and first-op set-up are not counted.
    training_pixels(photos[0], image_size)
    load_pixels(photos[0], image_size=image_size, **LIMITS)

    speeds = {"runtime (numpy + Pillow)": [], "training (TensorFlow)": []}
    for _ in range(arguments.passes):
        start = time.perf_counter()
        runtime_results = [load_pixels(data, image_size=image_size, **LIMITS) for data in photos]
        speeds["runtime (numpy + Pillow)"].append(len(photos) / (time.perf_counter() - start))
        start = time.perf_counter()
        training_results = [training_pixels(data, image_size) for data in photos]
        speeds["training (TensorFlow)"].append(len(photos) / (time.perf_counter() - start))

    differences = [
        numpy.abs(runtime.astype(numpy.int64) - training.astype(numpy.int64))
        for runtime, training in zip(runtime_results, training_results)
    ]
    print(machine_info())
    print(f"{len(photos)} photos from {arguments.source}, resized to {image_size}, {arguments.passes} passes")
    for name, values in speeds.items():
        print(f"  {name:26s} {statistics.median(values):7.1f} photos/s (min {min(values):.1f}, max {max(values):.1f})")
    largest = max(int(difference.max()) for difference in differences)
    mean = statistics.fmean(float(difference.mean()) for difference in differences)
    identical = sum(not difference.any() for difference in differences)
    print(f"  difference, training against runtime: largest {largest} levels, mean {mean:.3f} levels,")
    print(f"  photos identical: {identical} of {len(photos)}")


if __name__ == "__main__":
    main()
