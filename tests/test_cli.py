"""The command line: each subcommand's arguments, usage errors, `config`, `--version`, predict's choice of model,
threshold checks, and a quiet start-up. Everything runs in-process except one real `python -m catsdogs`."""

import logging
import os
import re
import subprocess
import sys
import tomllib

import absl.logging
import pytest

from catsdogs import __version__
from catsdogs.choices import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, default_config_text
from catsdogs.cli import build_parser, main
from catsdogs.cli.quiet import LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL, verbose_requested
from catsdogs.config import load_config
from catsdogs.errors import CatsdogsError
from catsdogs.inference import Prediction, Predictor
from catsdogs.inference.zero_shot import ZeroShotPredictor
from catsdogs.runs import CONFIG_FILE, MODEL_FILE, is_run_dir


def parse(*argv):
    return vars(build_parser().parse_args(list(argv)))


def expect(parsed, **expected):
    assert {key: parsed[key] for key in expected} == expected


# ----------------------------------------------------------------------------- argument handling


def test_global_options():
    expect(parse("config"), command="config", verbose=False)
    expect(parse("--verbose", "config"), command="config", verbose=True)


def test_config_arguments():
    expect(parse("config"), config=None, overrides=[])
    parsed = parse("config", "--config", "my.toml", "--set", "train.epochs=3", "--set", "predict.threshold=0.7")
    expect(parsed, config="my.toml", overrides=["train.epochs=3", "predict.threshold=0.7"])


def test_prepare_arguments():
    # Unset counts, fractions and seed stay None, so the config decides them.
    parsed = parse("prepare", "SRC", "--out", "DATA")
    expect(parsed, source="SRC", out="DATA", overwrite=False, no_progress=False, overrides=[])
    unset = ("split", "train", "val", "test", "val_fraction", "test_fraction", "seed", "config")
    assert all(parsed[name] is None for name in unset)
    flags = ["--split", "fraction", "--train", "4", "--val", "2", "--test", "1", "--val-fraction", "0.2"]
    flags += ["--test-fraction", "0.1", "--seed", "3", "--overwrite", "--no-progress", "--set", "data.min_side=8"]
    expect(
        parse("prepare", "SRC", "--out", "DATA", *flags),
        split="fraction",
        train=4,
        val=2,
        test=1,
        val_fraction=0.2,
        test_fraction=0.1,
        seed=3,
        overwrite=True,
        no_progress=True,
        overrides=["data.min_side=8"],
    )


def test_train_arguments():
    expect(parse("train", "DATA"), data="DATA", model=None, out="runs", name=None, fresh=False, overrides=[])
    parsed = parse("train", "DATA", "--model", "seed_cnn_bn", "--out", "R", "--name", "n", "--fresh", "--config", "c")
    expect(parsed, model="seed_cnn_bn", out="R", name="n", fresh=True, config="c")


def test_predict_arguments():
    expect(
        parse("predict", "RUN", "a.jpg", "b/"),
        run_dir="RUN",
        paths=["a.jpg", "b/"],
        threshold=DEFAULT_THRESHOLD,
        batch_size=DEFAULT_BATCH_SIZE,
        output_format="table",
        output=None,
        test_time_augmentation=None,
    )
    parsed = parse("predict", "a.jpg", "--threshold", "0.7", "--batch-size", "4", "--format", "json", "--output", "o")
    expect(parsed, run_dir="a.jpg", paths=[], threshold=0.7, batch_size=4, output_format="json", output="o")
    assert parse("predict", "RUN", "--tta")["test_time_augmentation"] is True
    assert parse("predict", "RUN", "--no-tta")["test_time_augmentation"] is False


def test_evaluate_arguments():
    expect(
        parse("evaluate", "RUN"),
        run_dir="RUN",
        split="test",
        data=None,
        threshold=DEFAULT_THRESHOLD,
        batch_size=DEFAULT_BATCH_SIZE,
        test_time_augmentation=None,
    )
    parsed = parse("evaluate", "RUN", "--split", "validation", "--data", "D", "--threshold", "0.3", "--batch-size", "8")
    expect(parsed, split="validation", data="D", threshold=0.3, batch_size=8)
    assert parse("evaluate", "RUN", "--tta")["test_time_augmentation"] is True


def test_explain_arguments():
    expect(
        parse("explain", "RUN", "a.jpg"),
        images=["a.jpg"],
        layer=None,
        feature_layers=None,
        no_feature_maps=False,
        out=None,
        threshold=DEFAULT_THRESHOLD,
    )
    parsed = parse(
        "explain", "RUN", "a.jpg", "b.jpg", "--layer", "backbone/top_conv", "--feature-layer", "c1",
        "--feature-layer", "c2", "--no-feature-maps", "--out", "O", "--threshold", "0.6",
    )  # fmt: skip
    expect(parsed, images=["a.jpg", "b.jpg"], layer="backbone/top_conv", feature_layers=["c1", "c2"])
    expect(parsed, no_feature_maps=True, out="O", threshold=0.6)


def test_compare_arguments():
    expect(parse("compare", "R1", "R2"), run_dirs=["R1", "R2"], out="comparison")
    expect(parse("compare", "R1", "--out", "C"), out="C")


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["prepare", "SRC"], "the following arguments are required: --out"),
        (["prepare", "SRC", "--out", "D", "--split", "random"], "invalid choice: 'random'"),
        (["prepare", "SRC", "--out", "D", "--train", "many"], "invalid int value: 'many'"),
        (["train", "DATA", "--epochs", "3"], "unrecognized arguments: --epochs 3"),
        (["predict", "RUN", "--format", "xml"], "invalid choice: 'xml'"),
        (["predict", "RUN", "--threshold", "high"], "invalid float value: 'high'"),
        (["predict", "RUN", "a.jpg", "--verbose"], "unrecognized arguments: --verbose"),
        (["evaluate", "RUN", "--split", "train"], "invalid choice: 'train'"),
        (["explain", "RUN"], "the following arguments are required: IMAGE"),
        (["compare"], "the following arguments are required: RUN"),
    ],
)
def test_bad_usage_exits_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: catsdogs" in error and message in error


def test_an_error_from_below_exits_2_naming_the_command(capsys):
    assert main(["config", "--set", "train.epoch=5"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("catsdogs config: error: ") and "Did you mean 'epochs'?" in error


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"catsdogs {__version__}\n"


# ----------------------------------------------------------------------------- config


def test_config_prints_the_documented_defaults(capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr().out == default_config_text()


def test_config_with_set_prints_toml_of_the_resolved_config(tmp_path, capsys):
    config_file = tmp_path / "mine.toml"
    config_file.write_text("[train]\nepochs = 7\n[predict]\nbatch_size = 8\n", encoding="utf-8")
    overrides = ["predict.threshold=0.7", "data.image_size=[64, 64]", 'model.name="seed_cnn_bn"']
    arguments = ["config", "--config", str(config_file)]
    for override in overrides:
        arguments += ["--set", override]
    assert main(arguments) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed == load_config(config_file, overrides).to_dict()
    assert printed["predict"] == {"threshold": 0.7, "batch_size": 8, "engine": "auto", "abstain_target_error": 0.005}
    assert (printed["train"]["epochs"], printed["data"]["image_size"]) == (7, [64, 64])


# ----------------------------------------------------------------------------- predict: run folder or zero-shot


class FakePredictor:
    """Stands in for a loaded model: every file is a cat."""

    def __init__(self, class_names=("cats", "dogs"), note=None):
        self.class_names = list(class_names)
        self.note = note

    def predict(self, files, sources=None):
        probabilities = {name: 1.0 if index == 0 else 0.0 for index, name in enumerate(self.class_names)}
        return [Prediction(source, self.class_names[0], 1.0, probabilities) for source in sources]


class Calls(list):
    """The loads a test saw, as (which, path, options), and the class names the run folder's fake model has."""

    class_names = None


@pytest.fixture
def loaded(monkeypatch):
    """Replace both model loaders with fakes and return the `Calls` they record."""
    calls = Calls()
    class_names = ["cats", "dogs"]

    def from_run_dir(path, **options):
        calls.append(("run", str(path), options))
        return FakePredictor(class_names)

    def zero_shot(**options):
        calls.append(("zero-shot", None, options))
        return FakePredictor(note="zero-shot note")

    monkeypatch.setattr(Predictor, "from_run_dir", from_run_dir)
    monkeypatch.setattr(ZeroShotPredictor, "load", zero_shot)
    calls.class_names = class_names
    return calls


@pytest.fixture
def folders(tmp_path):
    """A run folder (config.json only), a photo, a folder of photos, and a broken run folder (no config.json)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text("{}", encoding="utf-8")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"pixels")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes(b"weights")
    return {"run": run, "photo": photos / "a.jpg", "photos": photos, "broken": broken}


def test_is_run_dir(folders):
    assert is_run_dir(folders["run"])
    assert not is_run_dir(folders["photo"]) and not is_run_dir(folders["photos"])
    assert not is_run_dir(folders["run"] / "missing")
    with pytest.raises(CatsdogsError, match="not a run folder: it has no config.json"):
        is_run_dir(folders["broken"])


def test_predict_with_a_run_folder_loads_its_model(folders, loaded, capsys):
    photo = str(folders["photo"])
    arguments = ["predict", str(folders["run"]), photo, "--threshold", "0.7", "--batch-size", "4", "--tta"]
    assert main(arguments) == 0
    options = {"threshold": 0.7, "batch_size": 4, "test_time_augmentation": True, "engine": "auto", "abstain": True}
    assert loaded == [("run", str(folders["run"]), options)]
    output = capsys.readouterr()
    assert photo in output.out and "cats" in output.out and not output.out.startswith("#")
    assert "1 inputs, 1 predicted, 0 failed" in output.err


@pytest.mark.parametrize("first", ["photo", "photos"])
def test_predict_without_a_run_folder_asks_the_zero_shot_model(first, folders, loaded, capsys):
    assert main(["predict", str(folders[first]), "--batch-size", "4"]) == 0
    options = {"threshold": DEFAULT_THRESHOLD, "batch_size": 4, "test_time_augmentation": False, "neither": True}
    assert loaded == [("zero-shot", None, options)]
    output = capsys.readouterr()
    assert output.out.startswith("# zero-shot note\n") and str(folders["photo"]) in output.out
    predicted = 2 if first == "photos" else 1
    assert f"{predicted} inputs, {predicted} predicted, 0 failed" in output.err


def test_predict_zero_shot_notes_the_model_on_stderr_when_not_printing_a_table(folders, loaded, capsys):
    assert main(["predict", str(folders["photo"]), "--format", "csv"]) == 0
    output = capsys.readouterr()
    assert output.out.startswith("file,label,probability") and "catsdogs predict: zero-shot note" in output.err


def test_predict_refuses_a_run_folder_without_images_and_a_broken_run_folder(folders, loaded, capsys):
    assert main(["predict", str(folders["run"])]) == 2
    assert "Name at least one image" in capsys.readouterr().err
    assert main(["predict", str(folders["broken"]), str(folders["photo"])]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert loaded == []


def test_predict_notes_that_the_threshold_does_not_apply_to_more_classes(folders, loaded, capsys):
    loaded.class_names[:] = ["birds", "cats", "dogs"]
    assert main(["predict", str(folders["run"]), str(folders["photo"]), "--threshold", "0.7"]) == 0
    assert "--threshold applies to two-class models only" in capsys.readouterr().err
    assert main(["predict", str(folders["run"]), str(folders["photo"])]) == 0
    assert "--threshold applies" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{photo}", "--threshold", "0"],
        ["evaluate", "{run}", "--threshold", "1.5"],
        ["explain", "{run}", "{photo}", "--threshold", "1"],
    ],
    ids=["predict", "evaluate", "explain"],
)
def test_thresholds_outside_0_and_1_are_refused_before_any_work(argv, folders, loaded, capsys):
    argv = [argument.format(photo=folders["photo"], run=folders["run"]) for argument in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"catsdogs {argv[0]}: error: The decision threshold must lie strictly between 0 and 1")
    assert re.search(rf"Received: threshold={float(argv[-1])}$", error.strip())
    assert loaded == []


# ----------------------------------------------------------------------------- quiet start-up


@pytest.fixture
def restore_logging(monkeypatch):
    """Undo what a command does to the process: TensorFlow's log-level variable, absl's and TF's logger levels."""
    monkeypatch.delenv(LOG_LEVEL_VARIABLE, raising=False)
    verbosity, tensorflow_level = absl.logging.get_verbosity(), logging.getLogger("tensorflow").level
    yield
    absl.logging.set_verbosity(verbosity)
    logging.getLogger("tensorflow").setLevel(tensorflow_level)


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["--verbose", "config"], True),
        (["--verb", "train", "DATA"], True),
        (["config"], False),
        (["config", "--verbose"], False),
        (["predict", "--verbose"], False),
        (["--version"], False),
        ([], False),
    ],
)
def test_verbose_is_a_global_option_before_the_command(argv, verbose):
    assert verbose_requested(argv) is verbose


def test_commands_start_quietly_unless_the_user_set_the_log_level(restore_logging, monkeypatch):
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl.logging.set_verbosity(absl.logging.WARNING)
    assert main(["config"]) == 0
    assert os.environ[LOG_LEVEL_VARIABLE] == QUIET_LOG_LEVEL
    assert logging.getLogger("tensorflow").level == logging.ERROR
    assert absl.logging.get_verbosity() == absl.logging.ERROR
    monkeypatch.setenv(LOG_LEVEL_VARIABLE, "0")
    assert main(["config"]) == 0
    assert os.environ[LOG_LEVEL_VARIABLE] == "0"


def test_verbose_leaves_the_log_levels_alone(restore_logging):
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl.logging.set_verbosity(absl.logging.WARNING)
    assert main(["--verbose", "config"]) == 0
    assert LOG_LEVEL_VARIABLE not in os.environ
    assert logging.getLogger("tensorflow").level == logging.WARNING
    assert absl.logging.get_verbosity() == absl.logging.WARNING


def test_a_real_start_prints_no_tensorflow_notices():
    # `train --help` imports TensorFlow (to list the models), in a fresh process as a user's would.
    environment = {name: value for name, value in os.environ.items() if name != LOG_LEVEL_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-m", "catsdogs", "train", "--help"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0 and "models:" in result.stdout
    noise = [
        line
        for line in result.stderr.splitlines()
        if "oneDNN" in line
        or "absl::InitializeLog" in line
        or "cpu_feature_guard" in line
        or line.startswith("WARNING:")
        or re.match(r"[IWE]\d{4} ", line)
    ]
    assert noise == []


def test_held_back_notices_are_dropped_and_every_other_line_is_passed_on(capfd):
    from catsdogs.cli.quiet import _notices_held_back

    with _notices_held_back():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796174658.326264   20415 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796174658.3 cuda_dnn.cc:1] a real error\n")
    assert capfd.readouterr().err == "E0000 00:00:1796174658.3 cuda_dnn.cc:1] a real error\n"
