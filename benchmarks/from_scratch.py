"""Train a from-scratch model with `catsdogs train` and record its time-to-accuracy curve.

Runs `catsdogs.training.train` on the seed split (2,000 train / 1,000 validation /
1,000 test photos from ../shared/datasets/dogs-vs-cats/train) with the config
given, and after every epoch records the training time so far, the learning
rate, and training and validation accuracy. Every `--test-every` epochs it also
measures test accuracy; that evaluation's time is left out of the curve's clock.
Test accuracy is only reported, never used to choose anything.

Prints the curve and the final row as Markdown, writes the curve as CSV into the
run folder, and draws it to `--figure`.

Usage: python benchmarks/from_scratch.py --set model.name=xception_mini --set data.image_size=[128,128] ...
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402

from catsdogs.config import load_config  # noqa: E402
from catsdogs.data.dataset import make_dataset  # noqa: E402
from catsdogs.training import train  # noqa: E402
from machine import describe_machine, load_average  # noqa: E402
from train_throughput import prepared_data  # noqa: E402


class TimeToAccuracy(keras.callbacks.Callback):
    """Record (epoch, training minutes, learning rate, accuracies) after every epoch, and test accuracy every N."""

    def __init__(self, test_dataset, *, test_every):
        super().__init__()
        self.test_dataset, self.test_every = test_dataset, test_every
        self.rows = []
        self.started = None
        self.probe_seconds = 0.0

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        minutes = (time.monotonic() - self.started - self.probe_seconds) / 60
        test_accuracy = None
        if (epoch + 1) % self.test_every == 0 or epoch + 1 == self.params["epochs"]:
            probe_started = time.monotonic()
            test_accuracy = self.model.evaluate(self.test_dataset, verbose=0, return_dict=True)["accuracy"]
            self.probe_seconds += time.monotonic() - probe_started
        row = {
            "epoch": epoch + 1,
            "minutes": round(minutes, 3),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "accuracy": logs.get("accuracy"),
            "val_accuracy": logs.get("val_accuracy"),
            "val_loss": logs.get("val_loss"),
            "test_accuracy": test_accuracy,
        }
        self.rows.append(row)
        test_text = f", test {test_accuracy:.1%}" if test_accuracy is not None else ""
        print(
            f"curve: epoch {row['epoch']}, {minutes:.1f} min, train {row['accuracy']:.1%}, "
            f"val {row['val_accuracy']:.1%}{test_text}",
            flush=True,
        )


def draw_curve(rows, path, *, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    minutes = [row["minutes"] for row in rows]
    axis.plot(minutes, [row["accuracy"] for row in rows], label="train (augmented)", color="#999999", linewidth=1)
    axis.plot(minutes, [row["val_accuracy"] for row in rows], label="validation", color="#1f77b4")
    tested = [row for row in rows if row["test_accuracy"] is not None]
    axis.plot(
        [row["minutes"] for row in tested],
        [row["test_accuracy"] for row in tested],
        "o-",
        label="test",
        color="#d62728",
    )
    axis.axhline(0.92, color="#2ca02c", linestyle="--", linewidth=1, label="target 92%")
    axis.axhline(0.908, color="#ff7f0e", linestyle=":", linewidth=1, label="DLwP mini-Xception 90.8%")
    axis.set_xlabel("training time on 2 CPU cores (minutes)")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0.5, 1.0)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="Config override, as for catsdogs train."
    )
    parser.add_argument("--data", help="A prepared DATA folder (default: prepare the seed split into /tmp).")
    parser.add_argument("--runs", default="/tmp/catsdogs-bench-runs", help="Where run folders go.")
    parser.add_argument("--test-every", type=int, default=10, help="Measure test accuracy every N epochs.")
    parser.add_argument("--figure", type=Path, help="Where to draw the curve (PNG); default: the run folder.")
    arguments = parser.parse_args()
    data_dir = prepared_data(arguments.data)
    config = load_config(None, arguments.overrides)
    print(f"from_scratch: overrides {arguments.overrides}, data {data_dir}")
    print(describe_machine())
    test_dataset, _ = make_dataset(
        data_dir / "test", image_size=tuple(config.data.image_size), batch_size=64, cache=True
    )
    curve = TimeToAccuracy(test_dataset, test_every=arguments.test_every)
    started = time.monotonic()
    run_dir = train(config, data_dir, runs_dir=arguments.runs, resume=False, extra_callbacks=[curve], verbose=2)
    wall = time.monotonic() - started - curve.probe_seconds
    metrics = run_dir.read_metrics()

    curve_path = run_dir.path / "time_to_accuracy.csv"
    with open(curve_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(curve.rows[0]))
        writer.writeheader()
        writer.writerows(curve.rows)
    figure_path = arguments.figure or run_dir.path / "time_to_accuracy.png"
    draw_curve(
        curve.rows, figure_path, title=f"{config.model.name} {config.data.image_size[0]}px, {config.train.precision}"
    )

    print("\n| epoch | training minutes | learning rate | train accuracy | val accuracy | test accuracy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in curve.rows:
        if row["test_accuracy"] is not None:
            print(
                f"| {row['epoch']} | {row['minutes']:.1f} | {row['learning_rate']:.2e} | {row['accuracy']:.1%} | "
                f"{row['val_accuracy']:.1%} | {row['test_accuracy']:.1%} |"
            )
    print("\n| model | test accuracy | validation accuracy | epochs (best) | stop | fit time | wall time | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {config.model.name} | {metrics['test']['accuracy']:.1%} | {metrics['validation']['accuracy']:.1%} | "
        f"{metrics['epochs_done']} ({metrics['best_epoch']}) | {metrics['stop_reason']} | "
        f"{(metrics['fit_seconds'] - curve.probe_seconds) / 60:.1f} min | {wall / 60:.1f} min | {load_average():.1f} |"
    )
    print(f"run folder: {run_dir.path}; curve: {curve_path}, {figure_path}", flush=True)


if __name__ == "__main__":
    main()
