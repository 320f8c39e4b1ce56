"""EfficientNet-Lite0 features end to end (tf.data decoding + ONNX Runtime), pass by pass: the spread shows a stall.

`training.features.extract` decodes and resizes JPEGs with tf.data and runs the frozen backbone in ONNX
Runtime. Until December 2026 its pipeline used `tf.data.AUTOTUNE`, and some passes ended with the process
idle for seconds: deleting the iterator waited for the autotuner's thread (see src/catsdogs/data/pipeline.py).
A median hides that; the spread of passes and the share of each pass the CPU was busy show it.

For each image size it runs, interleaved pass by pass on the same photos:
- `extract` as catsdogs runs it (fixed parallelism, no autotuner);
- the baseline: the same pipeline with `tf.data.AUTOTUNE` and the autotuner on, as before the fix.
Per pass it records photos/s, the process CPU seconds per wall second (2.0 = both cores busy on 2 cores),
and the seconds between the last model call and the end of the pass (the idle tail). It also prints the
fraction of the compute limit reached: FLOPs per image (counted from the ONNX graph) x photos/s against
a float32 MatMul peak measured in ONNX Runtime on the same cores.

Prints a table and appends a JSON line to benchmarks/results/feature_passes.jsonl.

Usage:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/feature_passes.py [--photos 1000] [--passes 5] [--sizes 224,288]
"""

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_speed import conv_matmul_flops, matmul_peak_flops  # noqa: E402
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "feature_passes.jsonl"
SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
BATCH_SIZE = 32


def photo_paths(count):
    """Kaggle numbers 0..count/2 of each class: the seed split's photos, real sizes."""
    return [str(SOURCE / f"{label}.{number}.jpg") for number in range(count // 2) for label in ("cat", "dog")]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def autotuned_extract(extractor, paths, *, batch_size):
    """The baseline: `extract` as it was before the fix, with tf.data.AUTOTUNE and the autotuner on."""
    import tensorflow as tf

    from catsdogs.images import decode_and_resize

    image_size = extractor.image_size
    dataset = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(lambda path: decode_and_resize(tf.io.read_file(path), image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(2)
    )
    outputs = []
    for batch in dataset:
        outputs.append(extractor(batch.numpy().astype("float32"))[0])
    return [numpy.concatenate(outputs)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--sizes", default="224,288")
    arguments = parser.parse_args()

    from catsdogs.data.pipeline import parallel_calls
    from catsdogs.models.lite_weights import pretrained_efficientnet_lite0
    from catsdogs.training import features

    print(describe_machine())
    paths = photo_paths(arguments.photos)
    # The threads feature extraction gives ONNX Runtime: one per core this process may use.
    peak, peak_spread = matmul_peak_flops(parallel_calls())
    print(
        f"float32 MatMul peak in ONNX Runtime: {peak / 1e9:.0f} GFLOP/s (min-max {peak_spread[0] / 1e9:.0f}-"
        f"{peak_spread[1] / 1e9:.0f})"
    )
    record = {
        "machine": machine_info(),
        "photos": len(paths),
        "batch_size": BATCH_SIZE,
        "passes": arguments.passes,
        "matmul_peak_flops": peak,
        "sizes": {},
    }
    for side in (int(size) for size in arguments.sizes.split(",")):
        model = pretrained_efficientnet_lite0(include_top=False, input_shape=(side, side, 3))
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = Path(folder) / "features.onnx"
            model(numpy.zeros((1, side, side, 3), "float32"))  # Keras exports only a model that has been called.
            model.export(str(onnx_path), format="onnx", verbose=False)
            flops = conv_matmul_flops(onnx_path)
        extractor = features.FeatureExtractor(
            model, image_size=(side, side), output_names=["pooled"], engine="onnxruntime"
        )
        # Every model call's end time, so the idle tail after the last call can be measured.
        calls = []
        session_call = features.FeatureExtractor.__call__

        def recording_call(self, pixels, _calls=calls, _call=session_call):
            result = _call(self, pixels)
            _calls.append(time.perf_counter())
            return result

        features.FeatureExtractor.__call__ = recording_call
        variants = {"catsdogs extract (fixed parallelism)": features.extract, "baseline: AUTOTUNE": autotuned_extract}
        for function in variants.values():  # Warm-up: the ONNX export, first calls, file cache.
            function(extractor, paths[:BATCH_SIZE], batch_size=BATCH_SIZE)
        rows = {name: [] for name in variants}
        outputs = {}
        for _ in range(arguments.passes):
            for name, function in variants.items():
                wall_start = time.perf_counter()
                calls.clear()
                started_cpu = cpu_seconds()
                (outputs[name],) = function(extractor, paths, batch_size=BATCH_SIZE)
                ended = time.perf_counter()
                wall = ended - wall_start
                rows[name].append(
                    {
                        "photos_per_second": len(paths) / wall,
                        "cpu_share": (cpu_seconds() - started_cpu) / wall,
                        "idle_tail_seconds": ended - calls[-1],
                    }
                )
        features.FeatureExtractor.__call__ = session_call
        first, second = list(outputs.values())
        print(
            f"\n{side}x{side}: {flops / 1e9:.3f} GFLOP per image; {len(paths)} photos, batch {BATCH_SIZE}, "
            f"{arguments.passes} interleaved passes; largest feature difference between the two pipelines "
            f"{float(numpy.max(numpy.abs(first - second))):.2g}"
        )
        print("| pipeline | photos/s median | min-max | spread | CPU busy (cores) | idle tail max | of compute limit |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        record["sizes"][side] = {"flops_per_image": flops, "pipelines": rows}
        for name, passes in rows.items():
            speeds = [row["photos_per_second"] for row in passes]
            median = statistics.median(speeds)
            spread = (max(speeds) - min(speeds)) / median
            busy = statistics.median(row["cpu_share"] for row in passes)
            tail = max(row["idle_tail_seconds"] for row in passes)
            print(
                f"| {name} | {median:.1f} | {min(speeds):.1f}-{max(speeds):.1f} | {spread:.0%} | {busy:.2f} | "
                f"{tail:.2f} s | {median * flops / peak:.0%} |"
            )
            print("|   passes | " + ", ".join(f"{speed:.1f}" for speed in speeds) + " | | | | | |")
    append_jsonl(RESULTS_FILE, record)
    print(f"\nappended to {RESULTS_FILE.relative_to(REPOSITORY)}")


if __name__ == "__main__":
    main()
