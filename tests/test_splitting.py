"""The split `prepare` makes: numbers, fraction and all modes, their counts, and duplicates kept in one split."""

import shutil

import pytest

from catsdogs.cli import main
from catsdogs.errors import CatsdogsError
from tiny_prepare import entries_by_source, files_in, manifest_of, prepare

# ----------------------------------------------------------------------------- split modes


def test_numbers_split_takes_files_by_kaggle_number(kaggle_folder, tmp_path):
    report = prepare(kaggle_folder, tmp_path / "data")
    data = tmp_path / "data"
    assert files_in(data / "train" / "cats") == sorted(f"cat.{n}.jpg" for n in range(6))
    assert files_in(data / "validation" / "dogs") == sorted(f"dog.{n}.jpg" for n in range(6, 9))
    assert files_in(data / "test" / "cats") == sorted(f"cat.{n}.jpg" for n in range(9, 12))
    assert report.counts == {
        split: {"cats": count, "dogs": count} for split, count in [("train", 6), ("validation", 3), ("test", 3)]
    }
    entry = entries_by_source(data)["cat.10.jpg"]
    assert entry["destination"] == "test/cats/cat.10.jpg" and entry["status"] == "ok" and entry["label"] == "cats"
    assert entry["split"] == "test" and len(entry["sha256"]) == 64
    assert (data / "test/cats/cat.10.jpg").read_bytes() == (kaggle_folder / "cat.10.jpg").read_bytes()


def test_numbers_split_skips_files_beyond_the_counts(kaggle_folder, tmp_path):
    prepare(kaggle_folder, tmp_path / "data", train_per_class=2, validation_per_class=1, test_per_class=1)
    entry = entries_by_source(tmp_path / "data")["dog.7.jpg"]
    assert entry["status"] == "skipped" and entry["destination"] is None and "not selected" in entry["reason"]


def test_numbers_split_refuses_a_count_larger_than_exists(kaggle_folder, tmp_path):
    with pytest.raises(CatsdogsError, match="has 12 images in SOURCE.*asks? for 20") as caught:
        prepare(kaggle_folder, tmp_path / "data", train_per_class=10, validation_per_class=5, test_per_class=5)
    assert "Received: train_per_class=10" in str(caught.value)
    assert not (tmp_path / "data").exists()


def test_numbers_split_refuses_names_without_numbers(tmp_path, make_image_bytes):
    for class_index, class_name in enumerate(("cats", "dogs")):
        for name_index, name in enumerate(("fluffy", "rex", "tom", "max")):
            path = tmp_path / "tree" / class_name / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_image_bytes(seed=class_index * 10 + name_index))
    with pytest.raises(CatsdogsError, match="--split fraction"):
        prepare(tmp_path / "tree", tmp_path / "data", train_per_class=2, validation_per_class=1, test_per_class=1)


def test_fraction_split_is_seeded_shuffled_and_stratified(make_kaggle_folder, tmp_path):
    source = make_kaggle_folder(per_class=20)
    settings = {"split": "fraction", "train_per_class": 4, "validation_per_class": 2, "test_per_class": 2}
    report = prepare(source, tmp_path / "a", **settings)
    assert report.counts == {
        split: {"cats": n, "dogs": n} for split, n in [("train", 4), ("validation", 2), ("test", 2)]
    }
    prepare(source, tmp_path / "b", **settings)
    prepare(source, tmp_path / "c", seed=2, **settings)
    splits = {name: {s: e["split"] for s, e in entries_by_source(tmp_path / name).items()} for name in "abc"}
    assert splits["a"] == splits["b"]
    assert splits["a"] != splits["c"]
    drawn = sorted(source for source, split in splits["a"].items() if split == "train" and source.startswith("cat"))
    assert drawn != sorted(f"cat.{n}.jpg" for n in range(4)), "the draw should be shuffled, not by number"


def test_all_split_uses_every_usable_image(kaggle_folder, tmp_path):
    (kaggle_folder / "cat.3.jpg").write_bytes(b"")
    report = prepare(kaggle_folder, tmp_path / "data", split="all")
    assert report.counts["train"]["cats"] + report.counts["validation"]["cats"] + report.counts["test"]["cats"] == 11
    assert report.counts["validation"] == {"cats": 3, "dogs": 3} and report.counts["test"] == {"cats": 3, "dogs": 3}
    assert report.total == 23 and report.quarantined == [("cat.3.jpg", "empty file")]


def test_fraction_split_without_counts_draws_every_usable_image(kaggle_folder, tmp_path):
    (kaggle_folder / "cat.3.jpg").write_bytes(b"")
    no_counts = {"train_per_class": None, "validation_per_class": None, "test_per_class": None}
    report = prepare(kaggle_folder, tmp_path / "data", split="fraction", **no_counts)
    assert sum(report.counts[split]["cats"] for split in report.counts) == 11
    assert report.counts["validation"] == {"cats": 3, "dogs": 3} and report.counts["test"] == {"cats": 3, "dogs": 3}
    assert manifest_of(tmp_path / "data")["arguments"]["split"] == "fraction"
    # The same draw as "all": every usable image, shuffled with the same seed.
    prepare(kaggle_folder, tmp_path / "all", split="all")
    drawn = {source: entry["split"] for source, entry in entries_by_source(tmp_path / "data").items()}
    assert drawn == {source: entry["split"] for source, entry in entries_by_source(tmp_path / "all").items()}


@pytest.mark.parametrize(
    "split, counts, message",
    [
        ("fraction", {"train_per_class": 4}, "give all three counts, or none to draw from every usable image"),
        ("numbers", {"test_per_class": None}, "The numbers split needs the train, validation and test counts"),
    ],
)
def test_missing_counts_are_refused_saying_what_to_pass(kaggle_folder, tmp_path, split, counts, message):
    no_counts = {"train_per_class": None, "validation_per_class": None, "test_per_class": None}
    changes = {**no_counts, **counts} if split == "fraction" else counts
    with pytest.raises(CatsdogsError, match=message) as caught:
        prepare(kaggle_folder, tmp_path / "data", split=split, **changes)
    assert "Received: train_per_class=" in str(caught.value)
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- duplicates


def test_duplicates_land_in_one_split_and_are_reported(kaggle_folder, tmp_path):
    shutil.copyfile(kaggle_folder / "cat.0.jpg", kaggle_folder / "cat.11.jpg")  # 0 is train, 11 would be test
    shutil.copyfile(kaggle_folder / "dog.7.jpg", kaggle_folder / "dog.10.jpg")  # 7 is validation, 10 would be test
    report = prepare(kaggle_folder, tmp_path / "data")
    entries = entries_by_source(tmp_path / "data")
    assert entries["cat.11.jpg"]["split"] == entries["cat.0.jpg"]["split"] == "train"
    assert entries["dog.10.jpg"]["split"] == entries["dog.7.jpg"]["split"] == "validation"
    assert {"split": "train", "labels": ["cats"], "files": ["cat.0.jpg", "cat.11.jpg"]} in report.duplicate_groups
    assert len(report.duplicate_groups) == 2 and "cat.0.jpg = cat.11.jpg" in report.summary()


def test_a_duplicate_with_two_labels_is_flagged(kaggle_folder, tmp_path):
    shutil.copyfile(kaggle_folder / "cat.2.jpg", kaggle_folder / "dog.2.jpg")
    report = prepare(kaggle_folder, tmp_path / "data")
    assert report.duplicate_groups == [
        {"split": "train", "labels": ["cats", "dogs"], "files": ["cat.2.jpg", "dog.2.jpg"]}
    ]
    assert "(labelled cats and dogs!)" in report.summary()


def test_duplicates_stay_together_in_a_fraction_split(make_kaggle_folder, tmp_path):
    source = make_kaggle_folder(per_class=20)
    for number in range(1, 6):
        shutil.copyfile(source / "cat.0.jpg", source / f"cat.{number}.jpg")
    prepare(source, tmp_path / "data", split="all")
    entries = entries_by_source(tmp_path / "data")
    assert len({entries[f"cat.{number}.jpg"]["split"] for number in range(6)}) == 1


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "flags, drawn",
    [
        ([], 12),  # The numbers split's defaults (1000/500/500 per class) do not size a fraction draw.
        (["--train", "4", "--val", "2", "--test", "2"], 8),
        (
            [
                "--set",
                "data.train_per_class=4",
                "--set",
                "data.validation_per_class=2",
                "--set",
                "data.test_per_class=2",
            ],
            12,  # data.*_per_class are the numbers split's counts (default_config.toml); flags size a draw.
        ),
    ],
    ids=["no-counts", "flags", "config"],
)
def test_the_command_line_fraction_split_on_a_small_folder(kaggle_folder, tmp_path, capsys, flags, drawn):
    arguments = ["prepare", str(kaggle_folder), "--out", str(tmp_path / "data"), "--split", "fraction", "--no-progress"]
    assert main([*arguments, "--val-fraction", "0.25", "--test-fraction", "0.25", *flags]) == 0
    counts = manifest_of(tmp_path / "data")["counts"]
    assert {split: counts[split]["cats"] for split in counts} == {
        "train": drawn // 2,
        "validation": drawn // 4,
        "test": drawn // 4,
    }
    assert "manifest.json" in capsys.readouterr().out


def test_the_command_line_says_which_counts_a_fraction_split_needs(kaggle_folder, tmp_path, capsys):
    arguments = ["prepare", str(kaggle_folder), "--out", str(tmp_path / "data"), "--split", "fraction", "--train", "4"]
    assert main([*arguments, "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("catsdogs prepare: error: A fraction split draws --train + --val + --test images")
    assert "\n" not in error and error.endswith("validation_per_class=None, test_per_class=None")
