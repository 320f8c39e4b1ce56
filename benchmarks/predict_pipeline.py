"""How `Predictor.predict` should feed its model: which image pipeline keeps a run folder's prediction fast.

On real photos with a trained run (default: the newest run under runs/ and its
data folder's test split), the model converted once to ONNX Runtime as
`--engine onnxruntime` does, it times, interleaved so that every candidate sees
the same machine load:

- sequential: each batch decoded on the calling thread, then run (the loop of `runtime.ImagePredictor`);
- threads + TensorFlow decode: `Predictor.predict`, a thread per core decoding the next batches with
  `images.clean_image_bytes` and `images.decode_and_resize` while the model runs;
- threads + Pillow decode: the same loop with `runtime.load_pixels` (Pillow and numpy);
- tf.data: `tf.data` `map(decode_and_resize(read_file))` with one call per core and prefetch, as
  `training.features.extract` reads photos. It skips `clean_image_bytes`, so it would need another way to
  turn a bad file into an error row; it is here to show what that check costs.

It prints photos per second for each (median of the passes, with the min-max spread), the machine and its
load average (benchmarks/machine.py).

Usage:
    .venv/bin/python benchmarks/predict_pipeline.py [--run RUN] [--data DIR] [--photos 200] [--passes 3]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]


def newest_run() -> Path | None:
    """Return the newest finished run folder under runs/, or None."""
    runs = sorted(path for path in (REPOSITORY / "runs").glob("*") if (path / "model.keras").is_file())
    return runs[-1] if runs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=newest_run(), help="a trained run folder")
    parser.add_argument("--data", type=Path, help="a prepared data folder; default the run's own")
    parser.add_argument("--photos", type=int, default=200, help="test photos, spread over the split by name")
    parser.add_argument("--passes", type=int, default=3, help="timed passes of each candidate")
    arguments = parser.parse_args()
    if arguments.run is None:
        sys.exit("No trained run under runs/: train one with `make demo`, or pass --run RUN.")

    import tensorflow as tf

    from catsdogs.data.pipeline import PREFETCH_BATCHES, parallel_calls, without_autotuning
    from catsdogs.images import decode_and_resize
    from catsdogs.inference import Predictor
    from catsdogs.runs import RunDir
    from catsdogs.runtime import load_pixels

    print(describe_machine())
    run = RunDir.open(arguments.run)
    data_dir = arguments.data or Path(run.read_run_info()["data_dir"])
    files = sorted(str(path) for path in (data_dir / "test").rglob("*") if path.is_file())
    files = files[:: max(len(files) // arguments.photos, 1)][: arguments.photos]
    threaded = Predictor.from_run_dir(run.path, engine="onnxruntime", test_time_augmentation=False)
    started = time.monotonic()
    threaded.predict_pixels(numpy.zeros((1, *threaded.image_size, 3), numpy.float32))
    print(
        f"run {run.path.name}: {len(files)} photos at {threaded.image_size}; engine {threaded.engine} "
        f"(chosen and ready in {time.monotonic() - started:.1f} s)"
    )

    class PillowPredictor(Predictor):
        def load_image(self, image):
            return load_pixels(image, image_size=self.image_size, max_pixels=self.max_pixels, min_side=self.min_side)

    pillow = PillowPredictor(
        threaded.model, class_names=threaded.class_names, image_size=threaded.image_size, runner=threaded.runner
    )

    def sequential():
        return super(Predictor, threaded).predict(files)

    def tf_data():
        dataset = without_autotuning(
            tf.data.Dataset.from_tensor_slices(files)
            .map(
                lambda path: decode_and_resize(tf.io.read_file(path), threaded.image_size),
                num_parallel_calls=parallel_calls(),
            )
            .batch(threaded.batch_size)
            .prefetch(PREFETCH_BATCHES)
        )
        return [threaded.predict_pixels(batch.numpy()) for batch in dataset]

    candidates = {
        "sequential (TensorFlow decode)": sequential,
        "threads + TensorFlow decode": lambda: threaded.predict(files),
        "threads + Pillow decode": lambda: pillow.predict(files),
        "tf.data (no clean_image_bytes)": tf_data,
    }
    speeds = {name: [] for name in candidates}
    # Nothing is timed before every candidate has run once (thread pools, tf.data and TensorFlow's first ops).
    warm_files, files = files, files[: threaded.batch_size]
    for candidate in candidates.values():
        candidate()
    files = warm_files
    for _ in range(arguments.passes):
        for name, candidate in candidates.items():
            started = time.perf_counter()
            candidate()
            speeds[name].append(len(files) / (time.perf_counter() - started))
    for name, values in speeds.items():
        print(
            f"{name:32s} {statistics.median(values):6.1f} photos/s  ({min(values):.1f}-{max(values):.1f} "
            f"over {len(values)} passes)"
        )
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
