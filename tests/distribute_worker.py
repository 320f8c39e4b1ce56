"""One training process of the distribute tests: train a tiny model, save its final weights, print a summary.

Run as a script by tests/test_distribute.py, because logical devices and
MultiWorkerMirroredStrategy must be set up before TensorFlow starts, which a
pytest process has long done. The environment gives the cluster (TF_CONFIG).

    python tests/distribute_worker.py DATA RUNS WEIGHTS.npz [--logical-cpus N] [--set KEY=VALUE ...]

Prints one JSON line: {"run_dir": path or null, "history": {...} or null}.
"""

import argparse
import json
import sys

import numpy


def main(arguments=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("runs")
    parser.add_argument("weights", help="the .npz file that receives the weights at the end of every epoch")
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--name", default=None)
    options = parser.parse_args(arguments)

    import tensorflow as tf

    if options.logical_cpus:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(options.logical_cpus)]
        )

    import keras

    from catsdogs.training import train
    from fake_runs import tiny_config

    class SaveWeights(keras.callbacks.Callback):
        """Write the model's weights after every epoch, so the test can compare the workers' final weights."""

        def on_epoch_end(self, epoch, logs=None):
            numpy.savez(options.weights, *self.model.get_weights())

    run_dir = train(
        tiny_config(*options.overrides),
        options.data,
        runs_dir=options.runs,
        run_name=options.name,
        extra_callbacks=[SaveWeights()],
        verbose=0,
    )
    summary = {
        "run_dir": str(run_dir.path) if run_dir is not None else None,
        "history": run_dir.read_history() if run_dir is not None else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
