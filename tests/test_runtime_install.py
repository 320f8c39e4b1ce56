"""The base install (numpy, Pillow, ONNX Runtime) really works: `catsdogs --help`, `--version`, every subcommand's
help and `catsdogs predict EXPORT_DIR` run without the `train` and `serve` extras, every command that needs one
says what to install and exits 2, and a brand-new virtualenv with `pip install <repo>` and no extras predicts an
export with the very answers of the OnnxPredictor in this process (slow: pip downloads the runtime)."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from PIL import Image

import catsdogs.cli
import catsdogs.cli.config
from catsdogs.cli import build_parser, main
from catsdogs.cli.common import OPTIONAL_STACKS, SERVICE_STACK, TRAINING_STACK, missing_stack_message
from catsdogs.export import export_run
from catsdogs.runtime import OnnxPredictor
from fake_runs import colour_square, make_data, make_run

REPOSITORY = Path(__file__).resolve().parents[1]
# Every module of both extras: what the base install lacks.
BLOCKED_MODULES = sorted({module for stack in OPTIONAL_STACKS for module in stack.modules})
MISSING_TRAINING_STACK = re.compile(
    r"^catsdogs (\w+): error: `catsdogs \1` needs the training stack \(.*\), which is not installed; .*"
    r"Install it with: pip install 'catsdogs\[train\]' .*Received: missing module=(\w+)\n$"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fake run (the fixed red-minus-green model), its data folder and its ONNX export: (data, run, export)."""
    root = tmp_path_factory.mktemp("runtime-install")
    data_dir = make_data(root, per_class=2)
    run = make_run(root / "runs", data_dir)
    return data_dir, run.path, export_run(run.path).export_dir.path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two PNG photos (one red, one green, at other sizes than the model's) and a JPEG."""
    folder = tmp_path_factory.mktemp("runtime-install-photos")
    paths = []
    for index, (red, green, size, suffix) in enumerate(
        [(200, 0, 48, "png"), (0, 200, 40, "png"), (180, 20, 64, "jpg")]
    ):
        path = folder / f"photo{index}.{suffix}"
        Image.fromarray(colour_square(red, green, seed=index, size=size)).save(path, quality=95)
        paths.append(str(path))
    return paths


def _expected_rows(export_dir, photos):
    """The OnnxPredictor's answers in this process, as `catsdogs predict --format json` writes them."""
    predictions = OnnxPredictor.from_export_dir(export_dir).predict(photos)
    assert all(prediction.ok for prediction in predictions)
    return [(p.source, p.label, p.probabilities) for p in predictions]


def _assert_same_rows(rows, expected):
    assert [(row["file"], row["label"], row["error"]) for row in rows] == [
        (file, label, None) for file, label, _ in expected
    ]
    for row, (_, _, probabilities) in zip(rows, expected):
        assert row["probabilities"] == pytest.approx(probabilities, abs=1e-6)


# ----------------------------------------------------------------------------- the one list of each extra's modules


def _distribution_modules():
    """{normalised distribution name: its top-level modules}, from what this environment has installed."""
    modules = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            modules.setdefault(re.sub(r"[-_.]+", "-", distribution).lower(), set()).add(module)
    return modules


@pytest.mark.parametrize("stack", OPTIONAL_STACKS, ids=lambda stack: stack.extra)
def test_each_stack_lists_a_module_of_every_package_in_its_extra(stack):
    extras = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = extras["optional-dependencies"][stack.extra]
    installed = _distribution_modules()
    covered = set()
    for requirement in requirements:
        distribution = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()
        if distribution not in installed:
            pytest.skip(f"{distribution} is not installed here, so its modules cannot be read")
        assert installed[distribution] & set(stack.modules), (requirement, installed[distribution])
        covered |= installed[distribution]
    # And nothing else: every listed module comes from a package of the extra.
    assert set(stack.modules) <= covered


def test_the_message_names_the_extra_and_the_missing_module():
    message = missing_stack_message("evaluate", ModuleNotFoundError("No module", name="sklearn.metrics"))
    assert message.startswith("`catsdogs evaluate` needs the training stack (")
    assert "pip install 'catsdogs[train]'" in message and message.endswith("Received: missing module=sklearn")
    message = missing_stack_message("serve", ModuleNotFoundError("No module", name="fastapi"))
    assert "pip install 'catsdogs[serve]'" in message and message.endswith("Received: missing module=fastapi")
    assert missing_stack_message("train", ModuleNotFoundError("No module", name="catsdogs_typo")) is None
    assert missing_stack_message("train", ModuleNotFoundError("No module")) is None
    assert SERVICE_STACK.extra == "serve" and TRAINING_STACK.extra == "train"


def test_a_missing_module_of_no_extra_is_a_bug_and_is_raised(monkeypatch, capsys):
    def broken_run(arguments):
        raise ModuleNotFoundError("No module named 'catsdogs_typo'", name="catsdogs_typo")

    monkeypatch.setattr(catsdogs.cli.config, "run", broken_run)
    with pytest.raises(ModuleNotFoundError, match="catsdogs_typo"):
        main(["config"])


def test_a_missing_stack_exits_2_with_one_line(monkeypatch, capsys):
    def run_without_keras(arguments):
        raise ModuleNotFoundError("No module named 'keras'", name="keras")

    monkeypatch.setattr(catsdogs.cli.config, "run", run_without_keras)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    match = MISSING_TRAINING_STACK.match(captured.err)
    assert match and match.groups() == ("config", "keras"), captured.err


# ----------------------------------------------------------------------------- the training stack blocked

# Runs each argument list through `main` with every module of both extras blocked (None in sys.modules makes
# `import tensorflow` raise ModuleNotFoundError, as on the base install) and prints status and output as JSON.
_BLOCKED_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys

    blocked, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    for name in blocked:
        sys.modules[name] = None
    from catsdogs.cli import main

    results = []
    for argv in commands:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = main(argv)
            except SystemExit as exit:
                status = exit.code
            except BaseException as error:
                status = f"raised {type(error).__name__}: {error}"
        results.append({"status": status, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    print(json.dumps(results))
    """
)


def _run_blocked(commands, cwd):
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_SCRIPT, json.dumps(BLOCKED_MODULES), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return dict(zip(map(tuple, commands), json.loads(result.stdout)))


def _subcommands():
    parser = build_parser()
    return sorted(next(action for action in parser._actions if action.dest == "command").choices)


def test_the_command_line_without_the_training_stack(exported, photos, tmp_path):
    data_dir, run_dir, export_dir = str(exported[0]), str(exported[1]), str(exported[2])
    help_commands = [["--help"], ["--version"], *[[name, "--help"] for name in _subcommands()]]
    works = [["config"], ["predict", export_dir, *photos, "--format", "json"]]
    needs_the_training_stack = [
        ["prepare", str(Path(data_dir) / "train"), "--out", str(tmp_path / "prepared")],
        ["train", data_dir, "--out", str(tmp_path / "runs")],
        ["evaluate", run_dir],
        ["explain", run_dir, photos[0], "--out", str(tmp_path / "explain")],
        ["compare", run_dir, "--out", str(tmp_path / "comparison")],
        ["export", run_dir, "--out", str(tmp_path / "export")],
        ["predict", run_dir, photos[0]],
        ["predict", *photos],
    ]
    results = _run_blocked(help_commands + works + needs_the_training_stack, cwd=tmp_path)

    for argv in help_commands + works:
        assert results[tuple(argv)]["status"] == 0, (argv, results[tuple(argv)])
    assert results[("--version",)]["stdout"] == f"catsdogs {catsdogs.__version__}\n"
    assert "predict" in results[("--help",)]["stdout"]
    # Without Keras, `train --help` cannot list the models, and says what to install instead.
    assert "pip install 'catsdogs[train]'" in results[("train", "--help")]["stdout"]
    predicted = results[("predict", export_dir, *photos, "--format", "json")]
    _assert_same_rows(json.loads(predicted["stdout"]), _expected_rows(export_dir, photos))
    for argv in needs_the_training_stack:
        result = results[tuple(argv)]
        assert (result["status"], result["stdout"]) == (2, ""), (argv, result)
        match = MISSING_TRAINING_STACK.match(result["stderr"])
        assert match and match.group(1) == argv[0], (argv, result["stderr"])
        assert match.group(2) in TRAINING_STACK.modules
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- a fresh virtualenv, base install only


def _copy_sources(destination):
    """Copy what `pip install` reads (pyproject.toml, README.md, src/), so the build leaves the working tree alone."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, destination / name)
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPOSITORY / "src", destination / "src", ignore=ignored)
    return destination


def _run(command, cwd, timeout=120):
    # No PYTHONPATH: the fresh environment must find catsdogs in its own site-packages, not in this checkout.
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environment)


@pytest.mark.slow
def test_a_fresh_virtualenv_with_the_base_install_predicts_an_export(exported, photos, tmp_path):
    data_dir, _, export_dir = exported
    source = _copy_sources(tmp_path / "source")
    venv = tmp_path / "venv"
    started = time.perf_counter()
    created = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "catsdogs")
    installed = _run([python, "-m", "pip", "install", "--quiet", str(source)], cwd=tmp_path, timeout=900)
    assert installed.returncode == 0, installed.stderr
    install_seconds = time.perf_counter() - started

    check = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        import catsdogs
        from catsdogs.runtime import OnnxPredictor

        missing = [name for name in {BLOCKED_MODULES!r} if importlib.util.find_spec(name) is None]
        try:
            import tensorflow
            tensorflow_error = None
        except ModuleNotFoundError as error:
            tensorflow_error = error.name
        predictions = OnnxPredictor.from_export_dir(sys.argv[1]).predict(sys.argv[2:])
        rows = [{{"file": p.source, "label": p.label, "probabilities": p.probabilities, "error": p.error}}
                for p in predictions]
        print(json.dumps({{"catsdogs": catsdogs.__file__, "missing": missing, "tensorflow": tensorflow_error,
                          "rows": rows}}))
        """
    )
    checked = _run([python, "-c", check, str(export_dir), *photos], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert Path(report["catsdogs"]).is_relative_to(venv), report["catsdogs"]
    assert report["tensorflow"] == "tensorflow" and report["missing"] == BLOCKED_MODULES
    expected = _expected_rows(export_dir, photos)
    _assert_same_rows(report["rows"], expected)

    predicted = _run([command, "predict", str(export_dir), *photos, "--format", "json"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    _assert_same_rows(json.loads(predicted.stdout), expected)
    trained = _run([command, "train", str(data_dir), "--out", str(tmp_path / "runs")], cwd=tmp_path)
    assert trained.returncode == 2 and MISSING_TRAINING_STACK.match(trained.stderr), trained.stderr
    print(
        f"fresh virtualenv and base install: {install_seconds:.1f} s; whole test: {time.perf_counter() - started:.1f} s"
    )
