"""Speed of a run's exports side by side: batch-1 latency and batch-32 throughput per artifact, against the CPU's peak.

For every export folder the run has (RUN/export/onnx, onnx-int8, onnx-float16, tflite, tflite-int8,
tflite-float16: those present), it runs the artifact as catsdogs does, ONNX Runtime for `.onnx` and
the LiteRT interpreter (`ai_edge_litert`) for `.tflite`, on the same threads, interleaved call by call
so that every artifact sees the same machine load:

- batch-1 latency: the median of `--latency-calls` single-image calls (at least 20), with the min-max spread;
- batch-32 throughput: photos/s, the median of `--passes` passes (at least 5) of `--batches-per-pass` calls,
  with the min-max spread.

It also measures the float32 matrix-multiply peak of the machine through ONNX Runtime (one MatMul of
two 2048 x 2048 matrices on the same threads), counts the multiply-adds of one image from the float32
ONNX graph (Conv, MatMul and Gemm shapes; 2 FLOPs per multiply-add), and prints the fraction of that peak
each artifact's batch-32 throughput reaches. int8 kernels have a higher peak than float32 ones, so an
int8 fraction above what float32 reaches is possible and is no error.

It prints a table and appends one JSON line to benchmarks/results/export_speed.jsonl: what ran, nproc,
the CPU's model name and flags (avx512_vnni, avx512_bf16, amx), the library versions, medians and spreads.
Run it on a quiet machine: other processes on the same cores change every number.

Usage:
    .venv/bin/python benchmarks/export_speed.py RUN [--threads N] [--photos DIR] [--latency-calls 30]
        [--passes 7] [--batches-per-pass 2]
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy

from catsdogs.export.quantize import cpu_description

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, load_average, machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "export_speed.jsonl"
DEFAULT_PHOTOS = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
EXPORT_FOLDERS = ("onnx", "onnx-int8", "onnx-float16", "tflite", "tflite-int8", "tflite-float16")
ARTIFACT_FILES = {"onnx": "model.onnx", "tflite": "model.tflite"}
THROUGHPUT_BATCH_SIZE = 32
MINIMUM_LATENCY_CALLS = 20
MINIMUM_PASSES = 5
PEAK_MATRIX_SIDE = 2048
PEAK_CALLS = 10


def onnx_runner(path, threads):
    """Return a function pixels -> output running an `.onnx` file in ONNX Runtime on `threads` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda pixels: session.run(None, {input_name: pixels})[0]


def tflite_runner(path, threads):
    """Return a function pixels -> output running a `.tflite` file in LiteRT, one interpreter per batch size.

    Resizing an interpreter's input reallocates its tensors; keeping one interpreter per batch size
    keeps that cost out of the timed calls.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}

    def run(pixels):
        interpreter = interpreters.get(len(pixels))
        if interpreter is None:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            model_input = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(model_input["index"], list(pixels.shape), strict=True)
            interpreter.allocate_tensors()
            interpreters[len(pixels)] = interpreter
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def find_artifacts(run_dir):
    """Return {export folder name: artifact path} for the exports under RUN/export (or under RUN itself)."""
    export_root = run_dir / "export" if (run_dir / "export").is_dir() else run_dir
    artifacts = {}
    for name in EXPORT_FOLDERS:
        artifact = export_root / name / ARTIFACT_FILES[name.split("-")[0]]
        if artifact.exists():
            artifacts[name] = artifact
    if not artifacts:
        raise SystemExit(f"No exports found under {export_root}: expected folders among {', '.join(EXPORT_FOLDERS)}.")
    return artifacts


def image_size_of(artifacts):
    """Return (height, width) from the first export's preprocessing.json."""
    for artifact in artifacts.values():
        preprocessing = artifact.parent / "preprocessing.json"
        if preprocessing.is_file():
            return tuple(json.loads(preprocessing.read_text())["image_size"])
    raise SystemExit("No preprocessing.json found beside the artifacts, so the image size is unknown.")


def sample_pixels(photos_dir, image_size, count):
    """Return `count` real photos as float32 (count, height, width, 3), or seeded noise without a photo folder."""
    from catsdogs.runtime import load_pixels

    files = sorted(Path(photos_dir).glob("*.jpg"))[:count] if photos_dir and Path(photos_dir).is_dir() else []
    if files:
        return numpy.stack([load_pixels(path, image_size=image_size) for path in files]).astype("float32"), "photos"
    noise = numpy.random.default_rng(0).integers(0, 256, (count, *image_size, 3))
    return noise.astype("float32"), "random pixels"


def conv_matmul_flops(onnx_path):
    """Return the FLOPs of one image (2 per multiply-add) of the Conv, MatMul and Gemm nodes of a float32 ONNX model.

    Shapes come from ONNX shape inference with the batch fixed to 1.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    for model_input in model.graph.input:
        dims = model_input.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {tensor.name: [int(dim) for dim in tensor.dims] for tensor in model.graph.initializer}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[value.name] = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            # Weight (out_channels, in_channels / group, kernel...), output (1, out_channels, spatial...).
            weight, output = shapes[node.input[1]], shapes[node.output[0]]
            flops += 2 * int(numpy.prod(weight)) * int(numpy.prod(output[2:]))
        elif node.op_type in ("MatMul", "Gemm"):
            left, right = shapes[node.input[0]], shapes[node.input[1]]
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            inner, columns = (right[1], right[0]) if transposed else (right[-2], right[-1])
            flops += 2 * int(numpy.prod(left[:-1])) * inner * columns
    return flops


def matmul_peak_flops(threads):
    """Return the median float32 FLOP/s of a 2048 x 2048 MatMul in ONNX Runtime, and their min-max spread."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    side = PEAK_MATRIX_SIDE
    rng = numpy.random.default_rng(0)
    right = numpy_helper.from_array(rng.standard_normal((side, side)).astype("float32"), "right")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["left", "right"], ["product"])],
        "peak",
        [helper.make_tensor_value_info("left", TensorProto.FLOAT, [side, side])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, [side, side])],
        initializer=[right],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    left = rng.standard_normal((side, side)).astype("float32")
    session.run(None, {"left": left})
    rates = []
    for _ in range(PEAK_CALLS):
        started = time.perf_counter()
        session.run(None, {"left": left})
        rates.append(2 * side**3 / (time.perf_counter() - started))
    return statistics.median(rates), [min(rates), max(rates)]


def measure(runners, pixels, *, latency_calls, passes, batches_per_pass):
    """Time every runner, interleaved: single-image calls, then passes of batch-32 calls.

    Returns:
        {name: {"latency_batch1_ms": median, "latency_spread_ms": [min, max],
                "throughput_batch32_photos_per_second": median, "throughput_spread": [min, max]}}.
    """
    single = pixels[:1]
    batch = numpy.ascontiguousarray(pixels[numpy.arange(THROUGHPUT_BATCH_SIZE) % len(pixels)])
    # The first calls allocate buffers and pick kernels; they are not what a user waits for later.
    for run in runners.values():
        run(single)
        run(batch)
    latencies = {name: [] for name in runners}
    for _ in range(latency_calls):
        for name, run in runners.items():
            started = time.perf_counter()
            run(single)
            latencies[name].append((time.perf_counter() - started) * 1000.0)
    speeds = {name: [] for name in runners}
    for _ in range(passes):
        for name, run in runners.items():
            started = time.perf_counter()
            for _ in range(batches_per_pass):
                run(batch)
            speeds[name].append(batches_per_pass * THROUGHPUT_BATCH_SIZE / (time.perf_counter() - started))
    return {
        name: {
            "latency_batch1_ms": round(statistics.median(latencies[name]), 3),
            "latency_spread_ms": [round(min(latencies[name]), 3), round(max(latencies[name]), 3)],
            "throughput_batch32_photos_per_second": round(statistics.median(speeds[name]), 2),
            "throughput_spread": [round(min(speeds[name]), 2), round(max(speeds[name]), 2)],
        }
        for name in runners
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder with exports (or its export/ folder)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads per runtime")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of JPEG photos to feed")
    parser.add_argument("--latency-calls", type=int, default=30, help=f"batch-1 calls (>= {MINIMUM_LATENCY_CALLS})")
    parser.add_argument("--passes", type=int, default=7, help=f"batch-32 passes (>= {MINIMUM_PASSES})")
    parser.add_argument("--batches-per-pass", type=int, default=2, help="batch-32 calls in one pass")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="the JSON-lines file to append to")
    arguments = parser.parse_args()
    if arguments.latency_calls < MINIMUM_LATENCY_CALLS or arguments.passes < MINIMUM_PASSES:
        parser.error(f"--latency-calls must be >= {MINIMUM_LATENCY_CALLS} and --passes >= {MINIMUM_PASSES}")

    artifacts = find_artifacts(arguments.run_dir)
    image_size = image_size_of(artifacts)
    pixels, pixel_source = sample_pixels(arguments.photos, image_size, THROUGHPUT_BATCH_SIZE)
    runners = {
        name: (onnx_runner if path.suffix == ".onnx" else tflite_runner)(path, arguments.threads)
        for name, path in artifacts.items()
    }
    float_onnx = artifacts.get("onnx")
    flops_per_image = conv_matmul_flops(float_onnx) if float_onnx else None
    load_before = load_average()
    peak, peak_spread = matmul_peak_flops(arguments.threads)
    results = measure(
        runners,
        pixels,
        latency_calls=arguments.latency_calls,
        passes=arguments.passes,
        batches_per_pass=arguments.batches_per_pass,
    )
    for name, result in results.items():
        result["file_size_bytes"] = artifacts[name].stat().st_size
        if flops_per_image:
            achieved = flops_per_image * result["throughput_batch32_photos_per_second"]
            result["fraction_of_float32_matmul_peak"] = round(achieved / peak, 4)

    info = machine_info(packages=("onnxruntime", "ai-edge-litert", "numpy", "onnx"))
    cpu = cpu_description()
    record = {
        "benchmark": "export_speed",
        "run": str(arguments.run_dir.resolve()),
        "artifacts": {name: str(path) for name, path in artifacts.items()},
        "image_size": list(image_size),
        "input": pixel_source,
        "threads": arguments.threads,
        "latency_calls": arguments.latency_calls,
        "passes": arguments.passes,
        "batches_per_pass": arguments.batches_per_pass,
        "batch_size": THROUGHPUT_BATCH_SIZE,
        "nproc": info["nproc"],
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "versions": info["versions"],
        "float32_matmul_peak_gflops": round(peak / 1e9, 2),
        "float32_matmul_peak_spread_gflops": [round(value / 1e9, 2) for value in peak_spread],
        "flops_per_image": flops_per_image,
        "flops_source": "Conv, MatMul and Gemm shapes of the float32 ONNX graph, 2 FLOPs per multiply-add",
        "results": results,
        "load_average_1min": [round(load_before, 2), round(load_average(), 2)],
        "git_commit": info["git_commit"],
        "date": info["date"],
    }

    print(f"export_speed: {arguments.run_dir} at {image_size[0]}x{image_size[1]}, {arguments.threads} threads")
    print(f"cpu: {cpu['model']}, flags {cpu['flags']}, nproc {info['nproc']}; versions {info['versions']}")
    print(
        f"float32 MatMul peak {peak / 1e9:.1f} GFLOP/s (spread {peak_spread[0] / 1e9:.1f}-{peak_spread[1] / 1e9:.1f}); "
        + (f"{flops_per_image / 1e9:.3f} GFLOP per image" if flops_per_image else "no float32 ONNX to count FLOPs")
    )
    print("| export | size (MB) | batch-1 ms (min-max) | batch-32 photos/s (min-max) | of float32 peak |")
    print("|---|---:|---|---|---:|")
    for name, result in results.items():
        fraction = result.get("fraction_of_float32_matmul_peak")
        print(
            f"| {name} | {result['file_size_bytes'] / 1e6:.2f} "
            f"| {result['latency_batch1_ms']:.2f} ({result['latency_spread_ms'][0]:.2f}-"
            f"{result['latency_spread_ms'][1]:.2f}) "
            f"| {result['throughput_batch32_photos_per_second']:.1f} ({result['throughput_spread'][0]:.1f}-"
            f"{result['throughput_spread'][1]:.1f}) "
            f"| {'' if fraction is None else f'{fraction:.1%}'} |"
        )
    print(f"load average {load_before:.1f} before, {load_average():.1f} after")
    append_jsonl(arguments.results, record)
    print(f"appended to {arguments.results}")


if __name__ == "__main__":
    main()
