"""Transfer-learning benchmarks for EfficientNet-Lite0: choices on validation, the demo, zero-shot, full data, speed.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/transfer.py choose      # image size, flips, dropout, fine-tuning
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/transfer.py demo        # configs/demo.toml end to end, timed
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/transfer.py zero-shot   # mapping chosen on validation
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/transfer.py full-data   # 8,000 training photos, same test photos
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/transfer.py throughput --size 288  # photos/s, ours vs PyTorch

Every choice is made on the validation split; `choose` never looks at test.
The seed split is Kaggle numbers 0-999 (train), 1000-1499 (validation) and
1500-1999 (test) per class. The machine's 2 cores are shared with other
workers, so timings print the load average and take medians of repeats.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine, load_average  # noqa: E402 - after the path is set.

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCE = Path("/work/shared/datasets/dogs-vs-cats/train")
WORK = Path(tempfile.gettempdir()) / "catsdogs-transfer-bench"
CATSDOGS = [sys.executable, "-m", "catsdogs"]
REFERENCE_PYTHON = REPOSITORY / ".venv-bench" / "bin" / "python"


def run_command(arguments, **kwargs):
    """Run a catsdogs command; return (seconds, stdout). Raises on failure, showing its stderr."""
    started = time.monotonic()
    result = subprocess.run(arguments, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, arguments))} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started, result.stdout


def prepare_seed_split(out):
    """Prepare the seed split into `out` (fresh); return the seconds it took."""
    shutil.rmtree(out, ignore_errors=True)
    seconds, _ = run_command([*CATSDOGS, "prepare", str(SOURCE), "--out", str(out), "--no-progress"])
    return seconds


def log_loss(probabilities, labels):
    probabilities = numpy.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-numpy.mean(labels * numpy.log(probabilities) + (1 - labels) * numpy.log(1 - probabilities)))


def scores(probabilities, mirrored, labels):
    """Validation accuracy, accuracy with flip TTA and log loss."""
    return {
        "accuracy": float(numpy.mean((probabilities > 0.5) == labels)),
        "accuracy_tta": float(numpy.mean(((probabilities + mirrored) / 2 > 0.5) == labels)),
        "log_loss": log_loss(probabilities, labels),
    }


def _head_fit(
    model, train_inputs, train_labels, validation_inputs, validation_labels, *, epochs=20, learning_rate=1e-3
):
    """Fit like configs/demo.toml's phase 1: Adam, batch 32, ReduceLROnPlateau and early stopping on val_loss."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(factor=0.2, patience=3, min_lr=1e-5),
        keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
    ]
    model.fit(
        train_inputs,
        train_labels,
        batch_size=32,
        epochs=epochs,
        validation_data=(validation_inputs, validation_labels),
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )


def choose(arguments):
    """Image size, flipped features, dropout and fine-tuning length, all judged on validation."""
    from catsdogs.data.dataset import list_images
    from catsdogs.training.features import FeatureCache, FeatureExtractor, cached_features
    from catsdogs.training.transfer_features import extraction_model

    data_dir = WORK / "seed"
    if not (data_dir / "manifest.json").is_file():
        prepare_seed_split(data_dir)
    cache = FeatureCache(data_dir / ".cache" / "features")
    splits = {split: list_images(data_dir / split)[:2] for split in ("train", "validation")}

    def features(model, size, cut=None, block=None):
        feature_model, names = extraction_model(model, cut, block)
        extractor = FeatureExtractor(feature_model, image_size=(size, size), output_names=names)
        dtypes = ["float16", "float32"] if cut is not None else None
        return {
            (split, flip): cached_features(
                extractor, cache, paths=paths, labels=labels, root=data_dir, flip=flip, output_dtypes=dtypes
            )[0]
            for split, (paths, labels) in splits.items()
            for flip in (False, True)
        }

    labels = {split: numpy.asarray(split_labels, "float32") for split, (_, split_labels) in splits.items()}
    if arguments.sizes:
        choose_head(arguments, features, labels)
    choose_fine_tuning(arguments, features, labels)


def choose_head(arguments, features, labels):
    """Phase 1 choices: image size, flipped train features, dropout."""
    import keras

    from catsdogs.models import build_model
    from catsdogs.models.transfer import build_head

    print("\n-- Phase 1: head on pooled features (validation) --")
    print("| image size | flipped train features | dropout | val accuracy | val accuracy, flip TTA | val log loss |")
    print("|---:|:---:|---:|---:|---:|---:|")
    results = {}
    for size in arguments.sizes:
        model = build_model(
            "efficientnet_lite0", input_shape=(size, size, 3), num_classes=2, dropout_rate=0.5, weights="imagenet"
        )
        arrays = features(model, size)
        for flip_train in (False, True):
            for dropout in (0.2, 0.5, 0.7) if (flip_train and size == arguments.detail_size) else (0.5,):
                keras.utils.set_random_seed(0)
                head = build_head(model)
                head.get_layer("head_dropout").rate = dropout
                train_x = numpy.concatenate(
                    [arrays[("train", False)]["pooled"]] + ([arrays[("train", True)]["pooled"]] if flip_train else [])
                )
                train_y = numpy.concatenate([labels["train"]] * (2 if flip_train else 1))
                _head_fit(head, train_x, train_y, arrays[("validation", False)]["pooled"], labels["validation"])
                result = scores(
                    head.predict(arrays[("validation", False)]["pooled"], verbose=0)[:, 0],
                    head.predict(arrays[("validation", True)]["pooled"], verbose=0)[:, 0],
                    labels["validation"],
                )
                results[(size, flip_train, dropout)] = result
                print(
                    f"| {size} | {'yes' if flip_train else 'no'} | {dropout} | {result['accuracy']:.2%} | "
                    f"{result['accuracy_tta']:.2%} | {result['log_loss']:.4f} |",
                    flush=True,
                )
    best = min((key for key in results if key[1] and key[2] == 0.5), key=lambda key: results[key]["log_loss"])
    print(f"lowest validation log loss with flipped features: image size {best[0]}")


def choose_fine_tuning(arguments, features, labels):
    """Phase 2 choices: fine-tuning epochs, over several seeds (its gain is small next to seed noise)."""
    import keras

    from catsdogs.models import build_model
    from catsdogs.models.transfer import build_head
    from catsdogs.training.transfer import fine_tuning_model, fine_tuning_optimizer
    from catsdogs.training.transfer_features import cut_tensor

    size = arguments.detail_size
    print(
        f"\n-- Phase 2: fine-tuning the top {arguments.blocks} blocks at {size}x{size}, lr 1e-4 cosine (validation) --"
    )
    print("| seed | fine-tuning epochs | val accuracy | val accuracy, flip TTA | val log loss | seconds per epoch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed, epochs in [(seed, epochs) for seed in arguments.seeds for epochs in arguments.fine_tune_epochs]:
        keras.utils.set_random_seed(seed)
        model = build_model(
            "efficientnet_lite0", input_shape=(size, size, 3), num_classes=2, dropout_rate=0.5, weights="imagenet"
        )
        cut, block = cut_tensor(model, arguments.blocks)
        arrays = features(model, size, cut, block)
        cut_name = f"cut_{block}"
        head = build_head(model)
        train_y = numpy.concatenate([labels["train"]] * 2)
        _head_fit(
            head,
            numpy.concatenate([arrays[("train", flip)]["pooled"] for flip in (False, True)]),
            train_y,
            arrays[("validation", False)]["pooled"],
            labels["validation"],
        )
        model.get_layer("predictions").set_weights(head.get_layer("predictions").get_weights())
        if epochs == 0:
            fit_model, seconds = head, 0.0
            inputs = {flip: arrays[("validation", flip)]["pooled"] for flip in (False, True)}
        else:
            fit_model, _ = fine_tuning_model(model, arguments.blocks, cut)
            train_x = numpy.concatenate([arrays[("train", flip)][cut_name] for flip in (False, True)]).astype("float32")
            steps = epochs * int(numpy.ceil(len(train_x) / 32))
            fit_model.compile(
                optimizer=fine_tuning_optimizer("adam", learning_rate=1e-4, total_steps=steps),
                loss="binary_crossentropy",
            )
            started = time.monotonic()
            fit_model.fit(train_x, train_y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
            seconds = (time.monotonic() - started) / epochs
            inputs = {flip: arrays[("validation", flip)][cut_name].astype("float32") for flip in (False, True)}
        result = scores(
            fit_model.predict(inputs[False], verbose=0)[:, 0],
            fit_model.predict(inputs[True], verbose=0)[:, 0],
            labels["validation"],
        )
        print(
            f"| {seed} | {epochs} | {result['accuracy']:.2%} | {result['accuracy_tta']:.2%} | "
            f"{result['log_loss']:.4f} | {seconds:.0f} |",
            flush=True,
        )


def demo(arguments):
    """configs/demo.toml end to end: prepare, train (features, head, fine-tuning, evaluation, report), timed."""
    walls, accuracies = [], []
    for repeat in range(arguments.repeats):
        data_dir, runs_dir = WORK / "demo-data", WORK / "demo-runs"
        shutil.rmtree(runs_dir, ignore_errors=True)
        print(
            f"\nrun {repeat + 1} ({' '.join(arguments.overrides) or 'configs/demo.toml as is'}): load average "
            f"{load_average():.2f} at start",
            flush=True,
        )
        prepare_seconds = prepare_seed_split(data_dir)
        overrides = [argument for override in arguments.overrides for argument in ("--set", override)]
        train_seconds, _ = run_command(
            [
                *CATSDOGS,
                "train",
                str(data_dir),
                "--config",
                str(REPOSITORY / "configs" / "demo.toml"),
                "--out",
                str(runs_dir),
                "--name",
                "demo",
                *overrides,
            ]
        )
        run = runs_dir / "demo"
        metrics = json.loads((run / "metrics.json").read_text())
        info = json.loads((run / "run.json").read_text())
        single = metrics["evaluation"]["test"]
        wall = prepare_seconds + train_seconds
        walls.append(wall)
        print(
            f"prepare {prepare_seconds:.0f} s, train+evaluate+report {train_seconds:.0f} s, total {wall:.0f} s "
            f"(features {info['transfer'].get('feature_seconds')} s, fitting {info['transfer']['fit_seconds']} s); "
            f"load average {load_average():.2f} at end"
        )
        # Not part of the demo's time: the same run evaluated again with test-time augmentation.
        tta_seconds, _ = run_command([*CATSDOGS, "evaluate", str(run), "--tta"])
        tta = json.loads((run / "metrics.json").read_text())["evaluation"]["test"]
        accuracies.append((single["at_decision_threshold"]["accuracy"], tta["at_decision_threshold"]["accuracy"]))
        print(
            f"test accuracy: {accuracies[-1][0]:.2%} (log loss {single['log_loss']:.4f}); with flip TTA "
            f"{accuracies[-1][1]:.2%} "
            f"(log loss {tta['log_loss']:.4f}, evaluate --tta {tta_seconds:.0f} s); validation "
            f"{metrics['validation']['accuracy']:.2%}"
        )
    print(
        f"\nmedian wall time {statistics.median(walls):.0f} s over {len(walls)} runs; test accuracy (single, TTA) "
        f"{accuracies}"
    )


def zero_shot(arguments):
    """Zero-shot accuracy of the ImageNet model; the mapping is chosen on validation."""
    from catsdogs.data.dataset import list_images
    from catsdogs.inference.zero_shot import ZERO_SHOT_MAPPINGS, ZeroShotPredictor, zero_shot_cat_dog

    data_dir = WORK / "seed"
    if not (data_dir / "manifest.json").is_file():
        prepare_seed_split(data_dir)
    predictor = ZeroShotPredictor.load()
    accuracy = {}
    for split in ("validation", "test"):
        paths, labels, _ = list_images(data_dir / split)
        # The Predictor's own image path (normalise, decode, resize), then the raw ImageNet logits.
        logits = numpy.concatenate(
            [
                predictor.model.predict_on_batch(
                    numpy.stack([predictor.load_image(path) for path in paths[start : start + 32]]).astype("float32")
                )
                for start in range(0, len(paths), 32)
            ]
        )
        accuracy[split] = {
            mapping: float(numpy.mean((zero_shot_cat_dog(logits, mapping=mapping) > 0.5) == numpy.asarray(labels)))
            for mapping in ZERO_SHOT_MAPPINGS
        }
        rows = predictor.predict(paths)
        accuracy[split]["catsdogs predict (zero-shot)"] = float(
            numpy.mean([row.label == ("dogs" if label else "cats") for row, label in zip(rows, labels)])
        )
    print("| mapping | validation | test |\n|---|---:|---:|")
    for mapping in accuracy["validation"]:
        print(f"| {mapping} | {accuracy['validation'][mapping]:.2%} | {accuracy['test'][mapping]:.2%} |")
    chosen = max(ZERO_SHOT_MAPPINGS, key=lambda mapping: accuracy["validation"][mapping])
    print(f"chosen on validation: {chosen} -> test {accuracy['test'][chosen]:.2%}")


def full_data(arguments):
    """Train on all 10,000 photos except the seed's validation and test numbers, test on the seed's test photos."""
    source = WORK / "full-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    # Renumbered links, so that `prepare --split numbers` takes numbers 0-999 and 2000-4999 for train
    # (4,000 per class), then the seed's validation (1000-1499) and test (1500-1999) numbers unchanged in order.
    order = [*range(0, 1000), *range(2000, 5000), *range(1000, 2000)]
    for label in ("cat", "dog"):
        for rank, number in enumerate(order):
            (source / f"{label}.{rank}.jpg").symlink_to(SOURCE / f"{label}.{number}.jpg")
    data_dir, runs_dir = WORK / "full-data", WORK / "full-runs"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(runs_dir, ignore_errors=True)
    print(f"load average {load_average():.2f} at start")
    prepare_seconds, _ = run_command(
        [
            *CATSDOGS,
            "prepare",
            str(source),
            "--out",
            str(data_dir),
            "--train",
            "4000",
            "--val",
            "500",
            "--test",
            "500",
            "--no-progress",
        ]
    )
    train_seconds, _ = run_command(
        [
            *CATSDOGS,
            "train",
            str(data_dir),
            "--config",
            str(REPOSITORY / "configs" / "demo.toml"),
            "--out",
            str(runs_dir),
            "--name",
            "full",
        ]
    )
    metrics = json.loads((runs_dir / "full" / "metrics.json").read_text())
    single = metrics["evaluation"]["test"]
    run_command([*CATSDOGS, "evaluate", str(runs_dir / "full"), "--tta"])
    tta = json.loads((runs_dir / "full" / "metrics.json").read_text())["evaluation"]["test"]
    print("train 8,000 photos (4,000 per class), validation 1,000, test 1,000 (the seed's test photos)")
    print(
        f"prepare {prepare_seconds:.0f} s, train+evaluate+report {train_seconds:.0f} s; load average "
        f"{load_average():.2f} at end"
    )
    print(
        f"test accuracy: {single['at_decision_threshold']['accuracy']:.2%} (log loss {single['log_loss']:.4f}); "
        "with flip TTA "
        f"{tta['at_decision_threshold']['accuracy']:.2%} (log loss {tta['log_loss']:.4f}); validation "
        f"{metrics['validation']['accuracy']:.2%} (loss {metrics['validation']['loss']:.4f})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    choose_parser = commands.add_parser("choose")
    choose_parser.add_argument("--sizes", type=int, nargs="*", default=[224, 256, 288, 320], help="none: skip phase 1")
    choose_parser.add_argument("--detail-size", type=int, default=288)
    choose_parser.add_argument("--blocks", type=int, default=4)
    choose_parser.add_argument("--fine-tune-epochs", type=int, nargs="+", default=[0, 1, 2, 3])
    choose_parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    demo_parser = commands.add_parser("demo")
    demo_parser.add_argument("--repeats", type=int, default=1)
    demo_parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for train")
    commands.add_parser("zero-shot")
    commands.add_parser("full-data")
    throughput_parser = commands.add_parser("throughput")
    throughput_parser.add_argument("--photos", type=int, default=256)
    throughput_parser.add_argument("--repeats", type=int, default=3)
    throughput_parser.add_argument(
        "--size", type=int, default=224, help="image side in pixels (224, or the demo's 288)"
    )
    arguments = parser.parse_args(argv)
    print(f"== benchmarks/transfer.py {arguments.command} ==")
    print(describe_machine())
    if arguments.command == "throughput":
        from transfer_throughput import throughput

        throughput(arguments)
    else:
        {"choose": choose, "demo": demo, "zero-shot": zero_shot, "full-data": full_data}[arguments.command](arguments)
    print(f"load average {load_average():.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
