"""Candidate demo recipes: chosen on validation log loss, reported on the seed test and on a large test.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/recipes.py                      # every candidate
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/recipes.py --only lite2-260     # one (or a few)
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/recipes.py --table              # the table of recipes.jsonl

Each candidate trains exactly as `catsdogs train DATA --config configs/demo.toml`
does, with only the model and the image size changed: `catsdogs.training.train`
runs in this process (cached pooled features with flipped copies, computed by
the ONNX feature engine, then the head). The trained model's head then scores
pooled features of the validation split, the seed test split (Kaggle numbers
1500-1999 per class) and the large test: numbers 2000-4999 per class of the
shared folder (6,000 photos no recipe was ever chosen on). The large test is a
prepared-style folder of symlinks, `data/large_test/test/{cats,dogs}/`, under
the git-ignored `data/`; no photo is copied.

The concatenated candidate joins the pooled features of two trained candidates
(Lite0 at 288 and Lite2 at 260: 2,560 values per photo) and trains a new head on
them with the library's own head phase (`training.transfer._train_head`, the
code `catsdogs train` runs on cached features), with the demo's settings.

Only validation log loss chooses; the test numbers are reported, never used.
Accuracy is at the 0.5 threshold with a 95% Wilson interval; log loss has a 95%
percentile bootstrap interval (2,000 resamples of the photos). One training
seed per candidate (the demo's). Photos per second of the large-test extraction
are recorded to estimate each recipe's cost; the machine's 2 cores are shared,
so they are estimates, not timings.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402 - after the path is set.

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCE = Path("/work/shared/datasets/dogs-vs-cats/train")
DATA = REPOSITORY / "data" / "prepared"
LARGE_TEST = REPOSITORY / "data" / "large_test"
LARGE_TEST_NUMBERS = range(2000, 5000)
RUNS = REPOSITORY / "runs" / "recipes"
DEMO_CONFIG = REPOSITORY / "configs" / "demo.toml"
RESULTS = REPOSITORY / "benchmarks" / "results" / "recipes.jsonl"
HEADS_ONLY_RESULTS = REPOSITORY / "benchmarks" / "results" / "recipes_heads_only.jsonl"
CLASS_PREFIXES = {"cats": "cat", "dogs": "dog"}
BOOTSTRAP_RESAMPLES = 2000
# Photos one demo run pushes through the backbone: train twice (and flipped), validation, then evaluation
# of test and validation.
DEMO_PHOTO_PASSES = 2000 * 2 + 1000 + 1000 + 1000


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One recipe: a registry model at an image size, or the concatenation of other candidates' features."""

    name: str
    model: str | None = None
    size: int | None = None
    parts: tuple[str, ...] = ()


# In running order: the concatenation right after its parts, the costliest candidates last.
CANDIDATES = (
    Candidate("lite0-288", "efficientnet_lite0", 288),  # configs/demo.toml today.
    Candidate("lite2-260", "efficientnet_lite2", 260),  # Lite2's native size.
    Candidate("lite0-288+lite2-260", parts=("lite0-288", "lite2-260")),
    Candidate("lite1-240", "efficientnet_lite1", 240),  # Lite1's native size.
    Candidate("lite1-280", "efficientnet_lite1", 280),
    Candidate("lite2-300", "efficientnet_lite2", 300),
)


def build_large_test(source=SOURCE, out=LARGE_TEST):
    """Make `out`/test/{cats,dogs}/ hold symlinks to numbers 2000-4999 of each class; return the photo count."""
    count = 0
    for class_name, prefix in CLASS_PREFIXES.items():
        folder = out / "test" / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for number in LARGE_TEST_NUMBERS:
            target = source / f"{prefix}.{number}.jpg"
            link = folder / target.name
            if not target.is_file():
                raise FileNotFoundError(f"Large-test photo missing: {target}")
            if not link.is_symlink():
                link.symlink_to(target)
            count += 1
    return count


def scores(probabilities, labels, *, intervals):
    """Accuracy and log loss of P(dog) against labels (dog = 1), with 95% intervals when asked."""
    from sklearn.metrics import log_loss

    from catsdogs.evaluation.metrics import wilson_interval

    probabilities = numpy.asarray(probabilities, dtype=numpy.float64)
    labels = numpy.asarray(labels, dtype=numpy.int64)
    correct = int(numpy.sum((probabilities >= 0.5) == (labels == 1)))
    two_columns = numpy.stack([1.0 - probabilities, probabilities], axis=1)
    result = {
        "photos": len(labels),
        "errors": len(labels) - correct,
        "accuracy": correct / len(labels),
        "log_loss": float(log_loss(labels, two_columns, labels=[0, 1])),
    }
    if intervals:
        result["accuracy_interval"] = list(wilson_interval(correct, len(labels)))
        clipped = numpy.clip(probabilities, 1e-15, 1 - 1e-15)
        per_photo = -(labels * numpy.log(clipped) + (1 - labels) * numpy.log(1 - clipped))
        generator = numpy.random.default_rng(0)
        resampled = generator.integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
        means = per_photo[resampled].mean(axis=1)
        result["log_loss_interval"] = [float(numpy.percentile(means, 2.5)), float(numpy.percentile(means, 97.5))]
    return result


def pooled_features(model, data_dir, split, size, *, flip_train=False):
    """Pooled features and labels of one split, from the data folder's feature cache (extracted if missing)."""
    from catsdogs.training.transfer_features import load_split_features, open_feature_cache

    features = load_split_features(
        model,
        data_dir,
        splits=(split,),
        image_size=(size, size),
        flip_train=flip_train,
        cache=open_feature_cache(data_dir, RUNS),
        engine="auto",
    )[split]
    return features.pooled, features.labels


def train_candidate(candidate, config_path, data_dir):
    """Train one candidate as `catsdogs train` does; return (run folder, trained model)."""
    import keras

    from catsdogs.config import load_config
    from catsdogs.models.saving import load_model
    from catsdogs.training import train

    config = load_config(
        config_path,
        overrides=[
            f"model.name={candidate.model}",
            f"data.image_size=[{candidate.size}, {candidate.size}]",
            "train.feature_engine=auto",
        ],
    )
    keras.backend.clear_session()
    run_name = f"{candidate.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = train(config, data_dir, runs_dir=RUNS, run_name=run_name, resume=False, verbose=0)
    return run_dir, load_model(run_dir.model_path)


def evaluate_single(candidate, config_path, data_dir, large_dir):
    """Train a single-model candidate and score it; return (record, {split: (features, labels)})."""
    from catsdogs.models.transfer import build_head

    run_dir, model = train_candidate(candidate, config_path, data_dir)
    arrays = {
        "train": pooled_features(model, data_dir, "train", candidate.size, flip_train=True),
        "validation": pooled_features(model, data_dir, "validation", candidate.size),
        "test": pooled_features(model, data_dir, "test", candidate.size),
    }
    started = time.monotonic()
    arrays["large_test"] = pooled_features(model, large_dir, "test", candidate.size)
    large_seconds = time.monotonic() - started
    head = build_head(model)
    run_info = json.loads(run_dir.run_info_path.read_text())
    record = {
        "candidate": candidate.name,
        "model": candidate.model,
        "image_size": candidate.size,
        "run": str(run_dir.path.relative_to(REPOSITORY)),
        "head_epochs": run_info.get("transfer", {}).get("head_epochs"),
        # None when the large-test features came from the cache (a rerun), which measures nothing.
        "large_test_extraction_photos_per_second": (
            round(len(arrays["large_test"][1]) / large_seconds, 1) if large_seconds > 5 else None
        ),
    }
    record.update(score_head(head, arrays))
    return record, arrays


def part_arrays(candidate, data_dir, large_dir):
    """Pooled features of every split for a part of a concatenation, without training a head.

    The features depend on the frozen ImageNet backbone only, so a freshly built model reads the
    feature cache its earlier `evaluate_single` run filled (and extracts whatever is missing).
    """
    import keras

    from catsdogs.models import build_model

    keras.backend.clear_session()
    size = candidate.size
    model = build_model(candidate.model, input_shape=(size, size, 3), num_classes=2, weights="imagenet")
    return {
        "train": pooled_features(model, data_dir, "train", size, flip_train=True),
        "validation": pooled_features(model, data_dir, "validation", size),
        "test": pooled_features(model, data_dir, "test", size),
        "large_test": pooled_features(model, large_dir, "test", size),
    }


def score_head(head, arrays):
    """Validation, seed-test and large-test scores of a head on pooled features."""
    result = {}
    for split, intervals in (("validation", False), ("test", True), ("large_test", True)):
        features, labels = arrays[split]
        probabilities = head.predict(features, batch_size=256, verbose=0)[:, 0]
        result["seed_test" if split == "test" else split] = scores(probabilities, labels, intervals=intervals)
    return result


def evaluate_concatenated(candidate, config_path, parts):
    """Train a head on the concatenated pooled features of already evaluated candidates; return its record."""
    import keras
    from keras import layers

    from catsdogs.config import load_config
    from catsdogs.models import classifier_head
    from catsdogs.models.transfer import FEATURES_LAYER, HEAD_DROPOUT_LAYER, PREDICTIONS_LAYER, build_head
    from catsdogs.runs import RunDir
    from catsdogs.training.fit import resolve_progress
    from catsdogs.training.setup import fit_settings
    from catsdogs.training.transfer import _train_head
    from catsdogs.training.transfer_features import SplitFeatures

    config = load_config(config_path)
    train_config = config.train
    joined = {}
    for split in ("train", "validation", "test", "large_test"):
        labels = parts[0][split][1]
        for part in parts[1:]:
            if not numpy.array_equal(part[split][1], labels):
                raise RuntimeError(f"The parts list the {split} photos in different orders; cannot concatenate.")
        joined[split] = (numpy.concatenate([part[split][0] for part in parts], axis=1), labels)
    width = joined["train"][0].shape[1]
    keras.backend.clear_session()
    keras.utils.set_random_seed(train_config.seed)
    # A stand-in with the transfer models' head layers, so the library's head phase trains it unchanged.
    inputs = keras.Input(shape=(1, 1, width), name="features")
    x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(inputs)
    x = layers.Dropout(config.model.dropout_rate, name=HEAD_DROPOUT_LAYER)(x)
    # Keras scope names allow no '+'.
    stand_in = keras.Model(
        inputs, classifier_head(x, num_classes=2, name=PREDICTIONS_LAYER), name=candidate.name.replace("+", "_and_")
    )
    run_dir = RunDir(RUNS / f"{candidate.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.path.mkdir(parents=True)
    features = {
        split: SplitFeatures(labels=joined[split][1], pooled=joined[split][0]) for split in ("train", "validation")
    }
    optimizer, callback_settings = fit_settings(train_config)
    result = _train_head(
        stand_in,
        run_dir,
        None,
        features,
        num_classes=2,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        image_steps=0,
        optimizer=optimizer,
        callback_settings=dataclasses.replace(callback_settings, tensorboard=False),
        progress=resolve_progress(0),
        extra_callbacks=(),
        class_weight=None,
    )
    record = {
        "candidate": candidate.name,
        "model": "+".join(candidate.parts),
        "image_size": None,
        "run": str(run_dir.path.relative_to(REPOSITORY)),
        "head_epochs": len(result.history.get("loss", [])),
    }
    record.update(score_head(build_head(stand_in), joined))
    return record


def print_table(records):
    """Print the candidates as a markdown table, the validation choice first."""
    print(
        "| candidate | val log loss | val acc | seed test acc | seed test log loss | large test acc (95%) "
        "| large test log loss (95%) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for record in sorted(records, key=lambda item: item["validation"]["log_loss"]):
        seed, large, validation = record["seed_test"], record["large_test"], record["validation"]
        low, high = large["accuracy_interval"]
        loss_low, loss_high = large["log_loss_interval"]
        print(
            f"| {record['candidate']} | {validation['log_loss']:.4f} | {validation['accuracy']:.2%} "
            f"| {seed['accuracy']:.2%} | {seed['log_loss']:.4f} "
            f"| {large['accuracy']:.2%} ({low:.2%}-{high:.2%}) "
            f"| {large['log_loss']:.4f} ({loss_low:.4f}-{loss_high:.4f}) |"
        )
    best = min(records, key=lambda item: item["validation"]["log_loss"])
    print(f"\nchosen on validation log loss: {best['candidate']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[candidate.name for candidate in CANDIDATES])
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--data", type=Path, default=DATA, help="the prepared seed split")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the table of the results file and stop")
    parser.add_argument(
        "--heads-only",
        action="store_true",
        help="train every candidate's head in this process on the cached features (no `catsdogs train` run), "
        "so that all candidates share one version of the head code; results go to recipes_heads_only.jsonl",
    )
    arguments = parser.parse_args(argv)
    if arguments.heads_only and arguments.results == RESULTS:
        arguments.results = HEADS_ONLY_RESULTS
    if arguments.table:
        records = [json.loads(line) for line in arguments.results.read_text().splitlines() if line.strip()]
        latest = {record["candidate"]: record for record in records}
        print_table(list(latest.values()))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(describe_machine(packages=("tensorflow-cpu", "keras", "numpy", "onnxruntime", "scikit-learn")))
    print(f"large test: {build_large_test()} symlinks in {LARGE_TEST}")
    chosen = [c for c in CANDIDATES if not arguments.only or c.name in arguments.only]
    by_name = {candidate.name: candidate for candidate in CANDIDATES}
    arrays = {}
    records = []
    for candidate in chosen:
        if candidate.parts:
            missing = [part for part in candidate.parts if part not in arrays]
            for part in missing:
                arrays[part] = part_arrays(by_name[part], arguments.data, LARGE_TEST)
            record = evaluate_concatenated(candidate, arguments.config, [arrays[part] for part in candidate.parts])
        elif arguments.heads_only:
            arrays[candidate.name] = part_arrays(candidate, arguments.data, LARGE_TEST)
            record = evaluate_concatenated(candidate, arguments.config, [arrays[candidate.name]])
            record.update(model=candidate.model, image_size=candidate.size, heads_only=True)
        else:
            record, arrays[candidate.name] = evaluate_single(candidate, arguments.config, arguments.data, LARGE_TEST)
            photos_per_second = record["large_test_extraction_photos_per_second"]
            if photos_per_second:
                record["estimated_demo_feature_seconds"] = round(DEMO_PHOTO_PASSES / photos_per_second)
        record["machine"] = machine_info()
        records.append(record)
        append_jsonl(arguments.results, record)
        print(json.dumps({key: value for key, value in record.items() if key != "machine"}), flush=True)
    print_table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
