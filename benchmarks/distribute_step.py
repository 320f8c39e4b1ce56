"""`xception_mini` training step time with 1 and 2 replicas (`train.distribute`), Keras `fit` beside it.

Three ways to train the same model on the same synthetic batches, each timed by
the wall time between step ends after a warm-up:

- `keras_fit`: Keras `model.fit` without a strategy, the fit path catsdogs used
  before `training/loop.py` (the baseline);
- `loop_1_replica`: catsdogs' training loop under the default strategy
  (`train.distribute=none`), same per-replica batch;
- `loop_2_replicas`: the same loop under MirroredStrategy over two logical CPU
  devices (`train.distribute=mirrored`), the same per-replica batch, so each step
  trains twice the photos.

The logical devices share the machine's cores, so on a CPU two replicas are
expected to gain nothing: each replica's convolutions already use every core.
Images/s is the number to compare; step time grows with the global batch.

The cases alternate `--repeats` times, so every case sees the same machine
load; medians are printed as a table and appended as JSON lines (with the
machine's description) to benchmarks/results/distribute_step.jsonl.

Usage: python benchmarks/distribute_step.py [--image-size 128] [--batch-size 32] [--steps 20] [--repeats 3]
Quick check that it runs: --image-size 32 --batch-size 4 --steps 2 --warmup 1 --repeats 1 --results /tmp/x.jsonl
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCHMARKS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS_DIR))
DEFAULT_RESULTS = BENCHMARKS_DIR / "results" / "distribute_step.jsonl"
CASES = ("keras_fit", "loop_1_replica", "loop_2_replicas")


def configure_two_cpu_devices():
    """Split the CPU into two logical devices; only possible before TensorFlow runs anything."""
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def synthetic_batches(*, count, batch_size, side, seed=0):
    """Return a tf.data pipeline of `count` random (images 0..255, 0/1 labels) batches, held in memory."""
    import numpy
    import tensorflow as tf

    generator = numpy.random.default_rng(seed)
    images = generator.uniform(0, 255, (batch_size, side, side, 3)).astype("float32")
    labels = (generator.uniform(size=batch_size) > 0.5).astype("float32")
    return tf.data.Dataset.from_tensors((images, labels)).repeat(count)


def step_seconds(case, *, side, batch_size, warmup, steps):
    """Train one case for `warmup + steps` steps; return (seconds per timed step, photos per step)."""
    import keras

    from catsdogs.models import build_model
    from catsdogs.training.distribute import build_distribution
    from catsdogs.training.fit import compile_model
    from catsdogs.training.loop import run_epochs
    from catsdogs.training.optimizers import OptimizerSettings

    distribution = build_distribution("mirrored" if case == "loop_2_replicas" else "none")
    global_batch = distribution.global_batch_size(batch_size)
    data = synthetic_batches(count=warmup + steps, batch_size=global_batch, side=side)
    keras.utils.set_random_seed(0)
    with distribution.strategy.scope():
        model = build_model("xception_mini", input_shape=(side, side, 3), num_classes=2)
        optimizer = OptimizerSettings(name="adam", learning_rate=1e-3, schedule="constant")
        compile_model(model, num_classes=2, optimizer=optimizer, total_steps=warmup + steps)
    times = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: times.append(time.perf_counter()))
    if case == "keras_fit":
        model.fit(data, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    else:
        run_epochs(model, data, None, epochs=1, callbacks=[timer], verbose=0)
    return (times[-1] - times[warmup - 1]) / steps, global_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="Photos per replica per step.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per measurement.")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed steps first (tracing, caches).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON-lines file to append to.")
    arguments = parser.parse_args()
    configure_two_cpu_devices()
    from machine import append_jsonl, describe_machine, load_average, machine_info, median

    print(describe_machine())
    runs = {case: [] for case in CASES}
    photos = {}
    loads = []
    for _ in range(arguments.repeats):
        for case in CASES:
            seconds, photos[case] = step_seconds(
                case,
                side=arguments.image_size,
                batch_size=arguments.batch_size,
                warmup=arguments.warmup,
                steps=arguments.steps,
            )
            runs[case].append(seconds)
            loads.append(load_average())
    baseline = median(runs["keras_fit"]) / photos["keras_fit"]
    print(f"xception_mini, {arguments.image_size} px, {arguments.batch_size} photos per replica per step")
    print("| case | replicas | photos/step | step ms, median (runs) | images/s | vs keras_fit |")
    print("|---|---:|---:|---|---:|---:|")
    rows = []
    for case in CASES:
        step = median(runs[case])
        row = {
            "case": case,
            "replicas": 2 if case == "loop_2_replicas" else 1,
            "photos_per_step": photos[case],
            "step_seconds_median": round(step, 5),
            "step_seconds_runs": [round(value, 5) for value in runs[case]],
            "images_per_second": round(photos[case] / step, 2),
            "speed_vs_keras_fit": round(baseline / (step / photos[case]), 3),
        }
        rows.append(row)
        print(
            f"| {case} | {row['replicas']} | {row['photos_per_step']} | **{step * 1000:.1f}** "
            f"({', '.join(f'{value * 1000:.1f}' for value in runs[case])}) | {row['images_per_second']:.1f} | "
            f"{row['speed_vs_keras_fit']:.2f}x |"
        )
    record = {
        "benchmark": "distribute_step",
        "model": "xception_mini",
        "image_size": arguments.image_size,
        "batch_size_per_replica": arguments.batch_size,
        "steps": arguments.steps,
        "warmup": arguments.warmup,
        "repeats": arguments.repeats,
        "load_average_during": [round(value, 2) for value in loads],
        "rows": rows,
        **machine_info(),
    }
    append_jsonl(arguments.results, record)
    print(f"appended to {arguments.results}")


if __name__ == "__main__":
    main()
