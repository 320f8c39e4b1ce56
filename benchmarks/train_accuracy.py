"""Train models with `catsdogs train` on the seed split and report test accuracy, epochs and wall time.

Every model trains with the config given (the seed's settings by default: Adam,
batch 16, up to 50 epochs, seed 42, the seed's augmentation, early stopping on
validation loss, ReduceLROnPlateau 0.2/5/1e-4) on 2,000 train / 1,000 validation /
1,000 test photos from ../shared/datasets/dogs-vs-cats/train, then prints one
Markdown table row per model.

Usage: python benchmarks/train_accuracy.py --model seed_cnn [--model seed_cnn_bn] [--set key=value ...]
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catsdogs.config import load_config  # noqa: E402
from catsdogs.training import train  # noqa: E402
from machine import describe_machine, load_average  # noqa: E402
from train_throughput import prepared_data  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, help="Registry name; repeatable.")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="Config override, as for catsdogs train."
    )
    parser.add_argument("--data", help="A prepared DATA folder (default: prepare the seed split into /tmp).")
    parser.add_argument("--runs", default="/tmp/catsdogs-bench-runs", help="Where run folders go.")
    arguments = parser.parse_args()
    data_dir = prepared_data(arguments.data)
    print(
        f"train_accuracy: models {arguments.model}, overrides {arguments.overrides or 'none (seed settings)'}, data "
        f"{data_dir}"
    )
    print(describe_machine())
    print("| model | test accuracy | validation accuracy | epochs (best) | stop | fit time | wall time | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for model_name in arguments.model:
        config = load_config(None, [f"model.name={model_name}", *arguments.overrides])
        started = time.monotonic()
        run_dir = train(config, data_dir, runs_dir=arguments.runs, resume=False, verbose=2)
        wall = time.monotonic() - started
        metrics = run_dir.read_metrics()
        print(
            f"| {model_name} | {metrics['test']['accuracy']:.1%} | {metrics['validation']['accuracy']:.1%} | "
            f"{metrics['epochs_done']} ({metrics['best_epoch']}) | {metrics['stop_reason']} | "
            f"{metrics['fit_seconds'] / 60:.1f} min | {wall / 60:.1f} min | {load_average():.1f} |",
            flush=True,
        )
        print(f"run folder: {run_dir.path}", flush=True)


if __name__ == "__main__":
    main()
