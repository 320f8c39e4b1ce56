"""catsdogs prepare: quarantine, normalisation, hidden files, layouts, re-runs, interruption, refusals, the summary.

The split itself (modes, counts, duplicates kept together) is tested in test_splitting.py.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.cli import main
from catsdogs.data.checking import DELAY_VARIABLE
from catsdogs.data.prepare import MARKER_NAME, STAGING_NAME
from catsdogs.errors import CatsdogsError
from tiny_prepare import entries_by_source, files_in, manifest_of, prepare


def encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- bad and odd files


def test_every_bad_file_kind_is_quarantined_with_its_reason(kaggle_folder, tmp_path, make_image_bytes, snapshot):
    bad = {
        "cat.1.jpg": (b"", "empty file"),
        "cat.2.jpg": (make_image_bytes(seed=77, size=(64, 64))[:300], "truncated"),
        "cat.3.jpg": (b"<html>not a photo at all</html>\n" * 3, "not an image"),
        "cat.4.jpg": (encode(Image.new("RGB", (40, 40)), "TIFF"), "unsupported format: TIFF"),
        "dog.1.jpg": (encode(Image.new("RGB", (2000, 600)), "PNG"), "too many pixels: 2000x600"),
        "dog.2.jpg": (encode(Image.new("RGB", (12, 40)), "PNG"), "too small: 12x40"),
    }
    for name, (data, _) in bad.items():
        (kaggle_folder / name).write_bytes(data)
    before = snapshot(kaggle_folder)
    report = prepare(kaggle_folder, tmp_path / "data")
    entries = entries_by_source(tmp_path / "data")
    for name, (_, reason) in bad.items():
        assert (entries[name]["status"], entries[name]["reason"], entries[name]["destination"]) == (
            "quarantined",
            reason,
            None,
        )
        assert reason in report.summary()
    copied = {path.name for path in (tmp_path / "data").rglob("*.*") if path.name != "manifest.json"}
    assert copied.isdisjoint(bad) and report.counts["train"] == {"cats": 2, "dogs": 4}
    assert snapshot(kaggle_folder) == before, "SOURCE must never change"


def test_an_unreadable_file_is_quarantined_not_fatal(kaggle_folder, tmp_path):
    (kaggle_folder / "cat.5.jpg").unlink()
    (kaggle_folder / "cat.5.jpg").symlink_to(tmp_path / "gone.jpg")
    prepare(kaggle_folder, tmp_path / "data")
    entry = entries_by_source(tmp_path / "data")["cat.5.jpg"]
    assert entry["status"] == "quarantined" and entry["reason"].startswith("unreadable")


def test_odd_images_are_normalised_to_rgb_png(kaggle_folder, tmp_path, make_image_bytes):
    (kaggle_folder / "cat.0.jpg").write_bytes(make_image_bytes(seed=5, mode="CMYK"))
    (kaggle_folder / "cat.1.jpg").unlink()
    (kaggle_folder / "cat.1.gif").write_bytes(make_image_bytes(seed=6, format="GIF"))
    (kaggle_folder / "dog.0.jpg").unlink()
    (kaggle_folder / "dog.0.png").write_bytes(make_image_bytes(seed=7, format="PNG", mode="RGBA"))
    report = prepare(kaggle_folder, tmp_path / "data")
    entries = entries_by_source(tmp_path / "data")
    for source, destination in [
        ("cat.0.jpg", "train/cats/cat.0.png"),
        ("cat.1.gif", "train/cats/cat.1.png"),
        ("dog.0.png", "train/dogs/dog.0.png"),
    ]:
        assert entries[source]["destination"] == destination and entries[source]["note"]
        with Image.open(tmp_path / "data" / destination) as stored:
            assert (stored.format, stored.mode) == ("PNG", "RGB")
    assert report.normalised == 3


# ----------------------------------------------------------------------------- hidden files, layouts


def test_hidden_and_system_files_are_ignored(kaggle_folder, tmp_path, make_image_bytes):
    image = make_image_bytes(seed=99)
    for name in (".DS_Store", "Thumbs.db", "._cat.3.jpg", ".cat.50.jpg"):
        (kaggle_folder / name).write_bytes(image)
    for folder in (".hidden", "__MACOSX"):
        (kaggle_folder / folder).mkdir()
        (kaggle_folder / folder / "cat.60.jpg").write_bytes(image)
    report = prepare(kaggle_folder, tmp_path / "data")
    sources = set(entries_by_source(tmp_path / "data"))
    assert sources == {f"{prefix}.{n}.jpg" for prefix in ("cat", "dog") for n in range(12)}
    assert report.ignored == 6 and report.total == 24
    assert files_in(tmp_path / "data" / "train") == ["cats", "dogs"]


def test_a_tree_with_non_ascii_paths_goes_through(tmp_path, make_image_bytes):
    source = tmp_path / "데이터"
    for class_index, class_name in enumerate(("고양이", "강아지")):
        for number in range(1, 5):
            path = source / class_name / f"사진 {number}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_image_bytes(seed=class_index * 10 + number))
    out = tmp_path / "출력 데이터"
    report = prepare(
        source, out, class_names=["고양이", "강아지"], train_per_class=2, validation_per_class=1, test_per_class=1
    )
    assert (out / "train" / "고양이" / "사진 1.jpg").read_bytes() == (source / "고양이" / "사진 1.jpg").read_bytes()
    assert (out / "test" / "강아지" / "사진 4.jpg").is_file()
    assert report.counts["train"] == {"고양이": 2, "강아지": 2}
    assert entries_by_source(out)["고양이/사진 3.jpg"]["destination"] == "validation/고양이/사진 3.jpg"
    assert "고양이" in report.summary()


def test_a_tree_with_folders_that_are_not_classes_is_refused(tmp_path, make_image_bytes):
    for folder in ("cats", "dogs", "birds"):
        (tmp_path / "tree" / folder).mkdir(parents=True)
        (tmp_path / "tree" / folder / f"{folder}.1.jpg").write_bytes(make_image_bytes(seed=len(folder)))
    with pytest.raises(CatsdogsError, match="not classes: birds.*data.class_names"):
        prepare(tmp_path / "tree", tmp_path / "data", split="all")


def test_a_class_with_no_images_is_refused(make_kaggle_folder, tmp_path):
    source = make_kaggle_folder(prefixes=("cat", "bird"))
    with pytest.raises(CatsdogsError, match="Class 'dogs' has no images") as caught:
        prepare(source, tmp_path / "data")
    assert "Received: source=" in str(caught.value)


def test_a_class_whose_files_are_all_bad_is_refused(kaggle_folder, tmp_path):
    for number in range(12):
        (kaggle_folder / f"dog.{number}.jpg").write_bytes(b"")
    with pytest.raises(CatsdogsError, match="Class 'dogs' has no usable image"):
        prepare(kaggle_folder, tmp_path / "data")
    assert not (tmp_path / "data" / STAGING_NAME).exists() and not (tmp_path / "data" / MARKER_NAME).exists()


@pytest.mark.parametrize("layout", ["kaggle zip", "tree zip"])
def test_zip_sources_are_read_without_extracting(kaggle_folder, tmp_path, snapshot, layout):
    archive_path = tmp_path / "zips" / "train.zip"
    archive_path.parent.mkdir()
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("__MACOSX/train/._cat.0.jpg", b"resource fork")
        for path in sorted(kaggle_folder.iterdir()):
            class_folder = "cats/" if path.name.startswith("cat") else "dogs/"
            member = f"train/{path.name}" if layout == "kaggle zip" else f"{class_folder}{path.name}"
            archive.write(path, member)
    before = snapshot(archive_path.parent)
    report = prepare(archive_path, tmp_path / "data")
    assert snapshot(archive_path.parent) == before, "nothing may be extracted next to SOURCE"
    assert report.total == 24 and report.ignored == 1
    assert (tmp_path / "data/train/cats/cat.0.jpg").read_bytes() == (kaggle_folder / "cat.0.jpg").read_bytes()


# ----------------------------------------------------------------------------- re-runs and interruption


def test_a_second_run_changes_nothing(kaggle_folder, tmp_path):
    prepare(kaggle_folder, tmp_path / "data")
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "data").rglob("*")}
    report = prepare(kaggle_folder, tmp_path / "data")
    assert report.reused and report.checked == 0 and report.total == 24
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "data").rglob("*")} == before
    assert "Already up to date" in report.summary()


def test_a_run_killed_after_writing_its_manifest_needs_no_work(kaggle_folder, tmp_path):
    prepare(kaggle_folder, tmp_path / "data")
    (tmp_path / "data" / MARKER_NAME).write_text(json.dumps({"arguments": manifest_of(tmp_path / "data")["arguments"]}))
    report = prepare(kaggle_folder, tmp_path / "data")
    assert report.reused and not (tmp_path / "data" / MARKER_NAME).exists()


def test_a_changed_source_file_is_the_only_one_rewritten(kaggle_folder, tmp_path, make_image_bytes):
    prepare(kaggle_folder, tmp_path / "data")
    untouched = tmp_path / "data/train/cats/cat.1.jpg"
    mtime = untouched.stat().st_mtime_ns
    (kaggle_folder / "cat.0.jpg").write_bytes(make_image_bytes(seed=555))
    report = prepare(kaggle_folder, tmp_path / "data")
    assert not report.reused
    assert (tmp_path / "data/train/cats/cat.0.jpg").read_bytes() == make_image_bytes(seed=555)
    assert untouched.stat().st_mtime_ns == mtime


def test_the_process_pool_gives_the_same_result_as_one_process(make_kaggle_folder, tmp_path, snapshot):
    source = make_kaggle_folder(per_class=110)
    settings = {"split": "all"}
    prepare(source, tmp_path / "one", workers=1, **settings)
    prepare(source, tmp_path / "two", workers=2, **settings)
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def _kill_midway(source, out, ready):
    """Run `python -m catsdogs prepare` slowed by the test hook, SIGKILL its main process once `ready(out)`."""
    environment = {**os.environ, DELAY_VARIABLE: "0.01"}
    command = [
        sys.executable,
        "-m",
        "catsdogs",
        "prepare",
        str(source),
        "--out",
        str(out),
        "--split",
        "all",
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, env=environment, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not ready(out):
        assert process.poll() is None, f"prepare ended before it could be killed: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, "prepare never reached the point to kill it"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    try:
        # The worker processes must die with their parent, not linger.
        for _ in range(200):
            os.killpg(process.pid, 0)
            time.sleep(0.025)
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("worker processes outlived the killed prepare")
    except ProcessLookupError:
        pass


def _count(folder):
    return sum(1 for path in Path(folder).rglob("*") if path.is_file()) if Path(folder).is_dir() else 0


@pytest.mark.parametrize(
    "moment, ready",
    [
        pytest.param("while checking", lambda out: _count(out / STAGING_NAME) >= 40, id="while-checking"),
        pytest.param("while writing", lambda out: _count(out / "train") >= 40, id="while-writing"),
    ],
)
def test_a_run_killed_midway_completes_on_rerun(make_kaggle_folder, tmp_path, snapshot, moment, ready):
    source = make_kaggle_folder(per_class=120)
    settings = {
        "split": "all",
        "validation_fraction": 0.15,
        "test_fraction": 0.15,
        "seed": 42,
        "min_side": 32,
        "max_pixels": 50_000_000,
    }
    prepare(source, tmp_path / "reference", **settings)
    killed = tmp_path / "killed"
    _kill_midway(source, killed, ready)
    assert not (killed / "manifest.json").exists() and (killed / MARKER_NAME).exists()
    for path in killed.rglob("*"):
        if path.is_file() and path.parent.name != STAGING_NAME and path.name != MARKER_NAME:
            # Every image that reached a split folder is whole: it decodes.
            with Image.open(path) as image:
                image.load()
    report = prepare(source, killed, **settings)
    assert not report.reused
    assert snapshot(killed) == snapshot(tmp_path / "reference"), f"killed {moment}: the re-run must match"


# ----------------------------------------------------------------------------- refusals


def test_data_inside_or_equal_to_source_is_refused(kaggle_folder, snapshot):
    before = snapshot(kaggle_folder)
    for out in (kaggle_folder, kaggle_folder / "prepared"):
        with pytest.raises(CatsdogsError, match="DATA must not be SOURCE or inside it") as caught:
            prepare(kaggle_folder, out)
        assert str(caught.value).endswith(f"out={out}")
    assert snapshot(kaggle_folder) == before


def test_a_different_earlier_split_is_refused_unless_overwrite(kaggle_folder, tmp_path, snapshot):
    prepare(kaggle_folder, tmp_path / "data")
    before = snapshot(tmp_path / "data")
    with pytest.raises(CatsdogsError, match="different arguments.*train_per_class: 6 -> 4.*--overwrite"):
        prepare(kaggle_folder, tmp_path / "data", train_per_class=4)
    assert snapshot(tmp_path / "data") == before
    report = prepare(kaggle_folder, tmp_path / "data", train_per_class=4, overwrite=True)
    assert report.counts["train"] == {"cats": 4, "dogs": 4}
    assert files_in(tmp_path / "data/train/cats") == sorted(f"cat.{n}.jpg" for n in range(4))
    assert files_in(tmp_path / "data/test/cats") == sorted(f"cat.{n}.jpg" for n in range(7, 10))


def test_unknown_files_in_data_are_refused(kaggle_folder, tmp_path):
    (tmp_path / "data/train/cats").mkdir(parents=True)
    (tmp_path / "data/train/cats/mine.jpg").write_bytes(b"someone else's file")
    with pytest.raises(CatsdogsError, match="no readable catsdogs manifest describes"):
        prepare(kaggle_folder, tmp_path / "data")


def test_other_content_of_data_is_left_alone(kaggle_folder, tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "notes.txt").write_text("keep me")
    prepare(kaggle_folder, tmp_path / "data")
    assert (tmp_path / "data" / "raw" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- command line


def test_the_command_line_prints_the_summary(kaggle_folder, tmp_path, capsys):
    arguments = [
        "prepare",
        str(kaggle_folder),
        "--out",
        str(tmp_path / "data"),
        "--train",
        "6",
        "--val",
        "3",
        "--test",
        "3",
        "--no-progress",
    ]
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "train" in output and "validation" in output and "manifest.json" in output
    assert main(["prepare", str(kaggle_folder), "--out", str(tmp_path / "data"), "--train", "99", "--no-progress"]) == 2
    assert "has 12 images" in capsys.readouterr().err


def test_the_seed_split_of_real_photos(real_photos, tmp_path):
    report = prepare(
        real_photos, tmp_path / "data", train_per_class=2, validation_per_class=1, test_per_class=1, min_side=32
    )
    assert report.total == 8 and not report.quarantined and report.normalised == 0
    stored = np.asarray(Image.open(tmp_path / "data/train/dogs/dog.1.jpg"))
    assert stored.ndim == 3 and stored.shape[2] == 3
