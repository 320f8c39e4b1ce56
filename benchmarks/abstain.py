"""The "unsure" answer on real photos: calibration, the abstain threshold, coverage and accuracy when answered.

For a trained run it predicts the validation split (which fits the rule), the seed test split and, when it is
there, the large test (Kaggle numbers 2000-4999 of each class of the shared folder, 6,000 photos that no recipe
was chosen on), then reports:

- the temperature, and the expected calibration error and log loss before and after, per split;
- for each target error rate: the threshold Learn then Test certifies on validation (or none), and the
  coverage and accuracy among the answered photos on each test set, with a 95% Wilson interval;
- the smallest target the validation split can certify;
- the issue's goal on the large test (>= 99.9% accuracy on the answered photos while answering >= 97%), for the
  threshold chosen on validation and, for reference only, the best any threshold could do in hindsight.

Nothing is timed. The run folder is not changed: the rule is fitted here again exactly as `catsdogs evaluate`
fits it (the run's abstain.json, when present, is compared). The large test is a folder of symlinks,
data/large_test/test/{cats,dogs}/ (`catsdogs evaluate RUN --data data/large_test` reads it too), made here when missing.

Usage:
    .venv/bin/python benchmarks/abstain.py RUN [--large-test data/large_test/test] [--targets 0.001 0.005 0.01]
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "abstain.jsonl"
SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
LARGE_TEST = REPOSITORY / "data" / "large_test" / "test"
LARGE_TEST_NUMBERS = range(2000, 5000)
TARGETS = (0.001, 0.002, 0.005, 0.01, 0.02)
GOAL_ACCURACY, GOAL_COVERAGE = 0.999, 0.97


def ensure_large_test(folder, source=SOURCE):
    """Make folder/{cats,dogs}/ symlinks to Kaggle numbers 2000-4999 of `source` if missing; return the folder."""
    for prefix, name in (("cat", "cats"), ("dog", "dogs")):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for number in LARGE_TEST_NUMBERS:
            link = target / f"{prefix}.{number}.jpg"
            if not link.exists():
                try:
                    link.symlink_to(source / f"{prefix}.{number}.jpg")
                except FileExistsError:  # Another process made it in the meantime.
                    pass
    return folder


def predict_folder(predictor, folder, split):
    """Predict every photo of a folder of class folders; return `SplitPredictions`."""
    import numpy

    from catsdogs.data.dataset import list_images
    from catsdogs.evaluation.metrics import SplitPredictions

    paths, labels, class_names = list_images(folder)
    rows = predictor.predict(paths, sources=paths)
    readable = [index for index, row in enumerate(rows) if row.ok]
    probabilities = numpy.array([[rows[i].probabilities[name] for name in class_names] for i in readable])
    return SplitPredictions(
        split=split,
        labels=numpy.asarray(labels)[readable],
        probabilities=probabilities,
        class_names=class_names,
        paths=[paths[i] for i in readable],
    )


def hindsight_best(rule, predictions, decision_threshold, accuracy=GOAL_ACCURACY):
    """The largest coverage any threshold reaches on this split at `accuracy` when answered (for reference only)."""
    import numpy

    from catsdogs.evaluation.abstaining import confidences
    from catsdogs.evaluation.calibration import selective_curve

    _, correct, _, confidence = confidences(
        predictions, temperature=rule.temperature, decision_threshold=decision_threshold
    )
    coverage, selective, _ = selective_curve(confidence, correct)
    reaching = numpy.flatnonzero(selective >= accuracy)
    return float(coverage[reaching[-1]]) if len(reaching) else 0.0


def summary(measured):
    keep = (
        "answered",
        "images",
        "coverage",
        "errors_answered",
        "selective_accuracy",
        "accuracy_all",
        "ece_before",
        "ece_after",
        "log_loss_before",
        "log_loss_after",
    )
    return {
        **{key: measured[key] for key in keep},
        "selective_accuracy_interval": [
            measured["selective_accuracy_interval"]["low"],
            measured["selective_accuracy_interval"]["high"],
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run folder")
    parser.add_argument("--large-test", type=Path, default=LARGE_TEST, help="class folders of the large test")
    parser.add_argument("--no-large-test", action="store_true", help="skip the large test")
    parser.add_argument("--targets", type=float, nargs="+", default=TARGETS, help="target error rates to try")
    parser.add_argument("--engine", default="auto", help="what runs the model: auto, onnxruntime or keras")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="the JSON-lines file to append to")
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from catsdogs.config import config_from_dict
    from catsdogs.evaluation.abstaining import fit_abstain_rule, measure_rule
    from catsdogs.inference import Predictor
    from catsdogs.runs import RunDir

    run = RunDir.open(arguments.run)
    config = config_from_dict(run.read_config())
    decision_threshold = config.predict.threshold
    data_dir = Path(run.read_run_info()["data_dir"])
    predictor = Predictor.from_run_dir(run.path, abstain=False, engine=arguments.engine)
    splits = {
        "validation": predict_folder(predictor, data_dir / "validation", "validation"),
        "seed test": predict_folder(predictor, data_dir / "test", "test"),
    }
    if not arguments.no_large_test:
        splits["large test"] = predict_folder(predictor, ensure_large_test(arguments.large_test), "large test")
    print(f"predicted {sum(len(p.labels) for p in splits.values())} photos with {predictor.engine}", flush=True)
    stored = json.loads(run.abstain_path.read_text(encoding="utf-8")) if run.abstain_path.is_file() else None
    configured = config.predict.abstain_target_error
    targets = sorted({*arguments.targets, configured})
    results = {}
    for target in targets:
        rule, record = fit_abstain_rule(
            splits["validation"], decision_threshold=decision_threshold, target_error=target
        )
        entry = {"threshold": rule.threshold, "validation": record["validation"], "splits": {}}
        for name, predictions in splits.items():
            if name != "validation":
                entry["splits"][name] = summary(measure_rule(rule, predictions, decision_threshold=decision_threshold))
        if "large test" in splits:
            entry["large_test_goal_met"] = bool(
                entry["splits"]["large test"]["coverage"] >= GOAL_COVERAGE
                and (entry["splits"]["large test"]["selective_accuracy"] or 0) >= GOAL_ACCURACY
            )
        results[str(target)] = entry
        temperature = rule.temperature
    print(f"temperature {temperature:.4f} (run's abstain.json: {stored and stored['temperature']})")
    fitted = results[str(configured)]["validation"]
    print(
        f"validation: {fitted['images']} photos, {fitted['mistakes']} mistakes; ECE {fitted['ece_before']:.4f} -> "
        f"{fitted['ece_after']:.4f}; log loss {fitted['log_loss_before']:.4f} -> {fitted['log_loss_after']:.4f}; "
        f"smallest certifiable target {fitted['smallest_certifiable_error']}"
    )
    tested = [name for name in splits if name != "validation"]
    print(f"{'target':>8} {'threshold':>10} {'val cov':>8}  " + "  ".join(f"{name:>30}" for name in tested))
    for target, entry in results.items():
        cells = []
        for measured in entry["splits"].values():
            accuracy = measured["selective_accuracy"]
            cells.append(
                f"{measured['coverage']:7.2%} answered, {'-' if accuracy is None else f'{accuracy:.4%}'} right"
                f" ({measured['errors_answered']} wrong)"
            )
        threshold = "none" if entry["threshold"] is None else f"{entry['threshold']:.6f}"
        print(f"{float(target):8.3%} {threshold:>10} {entry['validation']['coverage']:8.2%}  " + "  ".join(cells))
    for name, measured in results[str(configured)]["splits"].items():
        print(
            f"{name}: accuracy {measured['accuracy_all']:.4%}; ECE {measured['ece_before']:.4f} -> "
            f"{measured['ece_after']:.4f}; log loss {measured['log_loss_before']:.4f} -> "
            f"{measured['log_loss_after']:.4f}"
        )
    hindsight = {}
    if "large test" in splits:
        rule, _ = fit_abstain_rule(splits["validation"], decision_threshold=decision_threshold, target_error=configured)
        hindsight = {
            name: hindsight_best(rule, predictions, decision_threshold)
            for name, predictions in splits.items()
            if name != "validation"
        }
        print(f"hindsight (not a method): largest coverage with >= {GOAL_ACCURACY:.1%} right: {hindsight}")
    record = {
        "benchmark": "abstain",
        "run": run.path.name,
        "engine": predictor.engine,
        "decision_threshold": decision_threshold,
        "configured_target_error": configured,
        "temperature": temperature,
        "stored_temperature": stored and stored["temperature"],
        "stored_threshold": stored and stored["threshold"],
        "targets": results,
        "hindsight_coverage_at_goal_accuracy": hindsight,
        "goal": {"accuracy_answered": GOAL_ACCURACY, "coverage": GOAL_COVERAGE},
        "machine": machine_info(),
    }
    append_jsonl(arguments.results, record)
    print(f"appended to {arguments.results}")


if __name__ == "__main__":
    main()
