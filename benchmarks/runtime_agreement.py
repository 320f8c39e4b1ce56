"""Do ONNX Runtime and Keras give a run folder the same answers on real photos? (issue 10's end-to-end check)

It predicts every photo of a split (default: the newest run under runs/ on
data/prepared/test, the 1,000 seed test photos that `make demo` prepares)
twice through `inference.Predictor`: with `--engine onnxruntime` (the run's
verified RUN/export/onnx when it fits, else the model converted to ONNX and
checked on its first batch) and with `--engine keras`, the run's own
test-time augmentation setting in both. It prints the machine
(benchmarks/machine.py), where the ONNX model came from, the share of photos
given the same label, the largest |difference| of any class probability,
accuracy under both engines, and photos per second for each (one pass each;
the model load and the conversion are not counted, the conversion's seconds
are printed beside them). The bar is 100% of labels and max |Δp| <= 1e-3.

Usage:
    .venv/bin/python benchmarks/runtime_agreement.py [--run RUN] [--split DIR] [--json FILE]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine, machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SPLIT = REPOSITORY / "data" / "prepared" / "test"
# The bound of issue 10: both engines give every photo the same label, and no probability moves by more.
MAX_PROBABILITY_DIFFERENCE = 1e-3


def newest_run() -> Path | None:
    """Return the newest run folder under runs/ that has a model, or None."""
    runs = sorted(path for path in (REPOSITORY / "runs").glob("*") if (path / "model.keras").is_file())
    return runs[-1] if runs else None


def compare_engines(run_path: str | os.PathLike, split_dir: str | os.PathLike) -> dict:
    """Predict every photo of a prepared split with ONNX Runtime and with Keras, and compare.

    Args:
        run_path: a trained run folder.
        split_dir: a prepared split (one folder per class, the run's classes), e.g. data/prepared/test.

    Returns:
        A dict: photos, errors (photos either engine could not read), onnx_engine, onnx_source, onnx_reason,
        label_agreement (a share), max_probability_difference, accuracy per engine, seconds per engine.
    """
    from catsdogs.data.dataset import list_images
    from catsdogs.inference import Predictor

    paths, labels, class_names = list_images(Path(split_dir))
    started = time.monotonic()
    onnx = Predictor.from_run_dir(run_path, engine="onnxruntime")
    if list(class_names) != list(onnx.class_names):
        raise SystemExit(f"The split's classes {class_names} are not the run's {onnx.class_names}.")
    # Choosing the engine (and converting, when there is no fitting export) happens outside the timing.
    onnx.open_engine(len(paths))
    ready_seconds = time.monotonic() - started
    keras_engine = Predictor(
        onnx.model,
        class_names=onnx.class_names,
        image_size=onnx.image_size,
        threshold=onnx.threshold,
        max_pixels=onnx.max_pixels,
        min_side=onnx.min_side,
        batch_size=onnx.batch_size,
        test_time_augmentation=onnx.test_time_augmentation,
    )
    rows, seconds = {}, {}
    for name, predictor in (("onnxruntime", onnx), ("keras", keras_engine)):
        started = time.monotonic()
        rows[name] = predictor.predict(paths, sources=paths)
        seconds[name] = time.monotonic() - started
    readable = [index for index in range(len(paths)) if rows["onnxruntime"][index].ok and rows["keras"][index].ok]
    probabilities = {
        name: numpy.array([[rows[name][index].probabilities[label] for label in class_names] for index in readable])
        for name in rows
    }
    predicted = {name: [rows[name][index].label for index in readable] for name in rows}
    truth = [class_names[labels[index]] for index in readable]
    agreement = float(numpy.mean([a == b for a, b in zip(predicted["onnxruntime"], predicted["keras"])]))
    return {
        "run": str(Path(run_path).resolve()),
        "split": str(Path(split_dir).resolve()),
        "photos": len(paths),
        "errors": len(paths) - len(readable),
        "test_time_augmentation": onnx.test_time_augmentation,
        "onnx_engine": onnx.engine,
        "onnx_source": onnx.runner.choice.source,
        "onnx_reason": onnx.runner.choice.reason,
        "onnx_ready_seconds": round(ready_seconds, 1),
        "label_agreement": agreement,
        "max_probability_difference": float(numpy.abs(probabilities["onnxruntime"] - probabilities["keras"]).max()),
        "accuracy": {name: float(numpy.mean([p == t for p, t in zip(predicted[name], truth)])) for name in rows},
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "photos_per_second": {name: round(len(paths) / value, 1) for name, value in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=newest_run(), help="a trained run folder; default the newest")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="a prepared split folder")
    parser.add_argument("--json", type=Path, help="also write the numbers and the machine to this JSON file")
    arguments = parser.parse_args()
    if arguments.run is None or not arguments.split.is_dir():
        sys.exit("Needs a trained run under runs/ and a prepared split (data/prepared/test): run `make demo` first.")

    print(describe_machine())
    result = compare_engines(arguments.run, arguments.split)
    passed = result["label_agreement"] == 1.0 and result["max_probability_difference"] <= MAX_PROBABILITY_DIFFERENCE
    print(f"run:        {result['run']}")
    print(f"split:      {result['split']}: {result['photos']} photos, {result['errors']} unreadable")
    print(f"onnx:       {result['onnx_source']}, ready in {result['onnx_ready_seconds']} s ({result['onnx_reason']})")
    print(f"labels:     {result['label_agreement']:.2%} the same")
    print(f"max |Δp|:   {result['max_probability_difference']:.2e} (bound {MAX_PROBABILITY_DIFFERENCE:g})")
    for name in ("onnxruntime", "keras"):
        print(
            f"{name + ':':<11} accuracy {result['accuracy'][name]:.4f}, {result['seconds'][name]} s, "
            f"{result['photos_per_second'][name]} photos/s"
        )
    print(f"verdict:    {'PASS' if passed else 'FAIL'}; load average after {os.getloadavg()[0]:.2f}")
    if arguments.json:
        arguments.json.write_text(json.dumps({**result, "machine": machine_info()}, indent=2) + "\n", encoding="utf-8")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
