"""The runtime image path with one JPEG decode against the former two, side by side on real photos.

`runtime.load_pixels` checks a photo with `images.clean_image_bytes` (a full decode) and then decoded the
bytes again to get the pixels. For an unchanged RGB JPEG the check's decode is exactly those pixels, so it
now keeps them (`keep_pixels=True`). Both paths run here, interleaved photo by photo, on the same photos:

- "two decodes": `clean_image_bytes(data)`, then `decode_rgb(clean.data)`, then the resize (the former path);
- "one decode": `load_pixels(data)` (the current path).

It checks that both give identical pixels, prints the median per photo of several passes, and appends one
JSON line to benchmarks/results/decode_once.jsonl.

    .venv/bin/python benchmarks/decode_once.py [--photos 200] [--passes 5] [--size 288]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catsdogs.images import clean_image_bytes  # noqa: E402
from catsdogs.runtime.preprocess import decode_rgb, load_pixels, resize_to_uint8  # noqa: E402
from machine import append_jsonl, describe_machine, machine_info, median  # noqa: E402 - after the path is set.

REPOSITORY = Path(__file__).resolve().parent.parent
PHOTOS = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"
RESULTS = REPOSITORY / "benchmarks" / "results" / "decode_once.jsonl"
LIMITS = {"max_pixels": 50_000_000, "min_side": 32}


def two_decodes(data, size):
    clean = clean_image_bytes(data, **LIMITS)
    return resize_to_uint8(decode_rgb(clean.data), (size, size))


def one_decode(data, size):
    return load_pixels(data, image_size=(size, size), **LIMITS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--size", type=int, default=288, help="the model's input side, as the demo's 288")
    parser.add_argument("--source", type=Path, default=PHOTOS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    arguments = parser.parse_args(argv)
    paths = sorted(arguments.source.rglob("*.jpg"))[: arguments.photos]
    if not paths:
        parser.error(f"no .jpg photos under {arguments.source}")
    photos = [path.read_bytes() for path in paths]
    print(describe_machine(packages=("numpy", "pillow")))
    print(f"{len(photos)} photos from {arguments.source}, {arguments.passes} passes, resized to {arguments.size}")
    for data in photos:
        if not numpy.array_equal(two_decodes(data, arguments.size), one_decode(data, arguments.size)):
            raise SystemExit("the two paths disagree on a photo: the one-decode path is wrong")
    cases = {"two decodes": two_decodes, "one decode": one_decode}
    per_pass = {name: [] for name in cases}
    for _ in range(arguments.passes):
        for name, function in cases.items():
            started = time.perf_counter()
            for data in photos:
                function(data, arguments.size)
            per_pass[name].append((time.perf_counter() - started) / len(photos) * 1000.0)
    medians = {name: median(values) for name, values in per_pass.items()}
    print("| path | ms per photo, median (passes) |\n|---|---|")
    for name, values in per_pass.items():
        print(f"| {name} | **{medians[name]:.2f}** ({', '.join(f'{v:.2f}' for v in values)}) |")
    saved = medians["two decodes"] - medians["one decode"]
    print(f"identical pixels on all {len(photos)} photos; one decode saves {saved:.2f} ms per photo")
    record = {
        "benchmark": "decode_once",
        "machine": machine_info(packages=("numpy", "pillow")),
        "photos": len(photos),
        "passes": arguments.passes,
        "size": arguments.size,
        "ms_per_photo": per_pass,
        "median_ms": medians,
        "identical": True,
    }
    append_jsonl(arguments.results, record)
    print(f"appended to {arguments.results}")


if __name__ == "__main__":
    main()
