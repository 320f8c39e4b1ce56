"""Training images/s in float32 against mixed_bfloat16 (`train.precision`), through catsdogs' own pipeline.

For each model and image size it trains through the cached, augmenting tf.data
pipeline of `catsdogs train`, alternating float32 and mixed_bfloat16 several
times so both see the same machine load, and prints the medians and their ratio.
bfloat16 only pays off on CPUs with bfloat16 instructions; the script prints the
CPU's relevant flags.

Usage: python benchmarks/precision_speed.py [--data DATA] [--repeats 3] [--steps 30]
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catsdogs.data.dataset import make_dataset  # noqa: E402
from catsdogs.models import build_model  # noqa: E402
from catsdogs.training.trainer import dtype_policy  # noqa: E402
from machine import describe_machine, load_average, median  # noqa: E402
from train_throughput import StepTimer, prepared_data  # noqa: E402

WARMUP_STEPS = 5
# (model, image side, batch size): the seed CNN as the seed ran it, and xception_mini at the sizes we considered.
CASES = (("seed_cnn", 180, 16), ("xception_mini", 128, 32), ("xception_mini", 160, 32), ("xception_mini", 180, 32))
AUGMENT = dict(flip=True, rotation=0.1, zoom=0.2, translation=0.1, contrast=0.2, brightness=0.2)


def cpu_flags(wanted=("avx512_bf16", "amx_bf16", "avx512f", "avx2")):
    """Return which of the `wanted` instruction-set flags /proc/cpuinfo lists."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in wanted if flag in flags]


def images_per_second(model_name, side, batch_size, precision, train_dir, steps):
    """Train `steps` steps after a warm-up with the given dtype policy and return images per second."""
    dataset, _ = make_dataset(
        train_dir, image_size=(side, side), batch_size=batch_size, shuffle=True, seed=42, cache=True, augment=AUGMENT
    )
    with dtype_policy(precision):
        model = build_model(model_name, input_shape=(side, side, 3), num_classes=2)
    model.compile(optimizer="adamw", loss="binary_crossentropy", metrics=["accuracy"])
    timer = StepTimer()
    model.fit(dataset.repeat(), steps_per_epoch=WARMUP_STEPS + steps, epochs=1, verbose=0, callbacks=[timer])
    return steps * batch_size / (timer.times[-1] - timer.times[WARMUP_STEPS - 1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="A prepared DATA folder (default: prepare the seed split into /tmp).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="Timed training steps per measurement.")
    arguments = parser.parse_args()
    train_dir = prepared_data(arguments.data) / "train"
    print(
        f"precision_speed: {arguments.repeats} alternating repeats of {arguments.steps} steps; CPU flags {cpu_flags()}"
    )
    print(describe_machine())
    print("| model | image | batch | float32 images/s (runs) | mixed_bfloat16 images/s (runs) | speed-up | load avg |")
    print("|---|---:|---:|---|---|---:|---:|")
    for model_name, side, batch_size in CASES:
        runs = {"float32": [], "mixed_bfloat16": []}
        for _ in range(arguments.repeats):
            for precision in runs:
                runs[precision].append(
                    images_per_second(model_name, side, batch_size, precision, train_dir, arguments.steps)
                )
        medians = {precision: median(values) for precision, values in runs.items()}
        print(
            f"| {model_name} | {side} | {batch_size} | "
            + " | ".join(f"**{medians[p]:.0f}** ({', '.join(f'{v:.0f}' for v in runs[p])})" for p in runs)
            + f" | {medians['mixed_bfloat16'] / medians['float32']:.2f}x | {load_average():.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
