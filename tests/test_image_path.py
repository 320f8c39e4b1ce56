"""One image path: a photo gives the same pixels through `prepare` + training as through `predict`."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.data.dataset import list_images, make_dataset
from catsdogs.data.prepare import prepare_dataset
from catsdogs.inference import Predictor
from fake_runs import make_data, make_run, untrained_seed_cnn


def _photo(seed, size=(40, 56)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size[1], size[0]), Image.BILINEAR)


def _odd_files(offset):
    """One photo of each kind that `prepare` must normalise, plus a plain JPEG that passes through."""
    files = {}
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    _photo(1 + offset).save(rotated, "JPEG", exif=exif.tobytes(), quality=92)
    files["rotated.jpg"] = rotated.getvalue()
    cmyk = io.BytesIO()
    _photo(2 + offset).convert("CMYK").save(cmyk, "JPEG", quality=92)
    files["cmyk.jpg"] = cmyk.getvalue()
    rgba = io.BytesIO()
    transparent = _photo(3 + offset).convert("RGBA")
    transparent.putalpha(128)
    transparent.save(rgba, "PNG")
    files["alpha.png"] = rgba.getvalue()
    gray = io.BytesIO()
    _photo(4 + offset).convert("L").save(gray, "WEBP", lossless=True)
    files["gray.webp"] = gray.getvalue()
    plain = io.BytesIO()
    _photo(5 + offset).save(plain, "JPEG", quality=90)
    files["plain.jpg"] = plain.getvalue()
    return files


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = make_run(root, make_data(root, per_class=1), name="pixels", model_name="seed_cnn", model=untrained_seed_cnn())
    return Predictor.from_run_dir(run.path)


def _prepare_everything(source, data_dir):
    """Prepare every photo of `source` into `data_dir` (split "all") and return the manifest."""
    prepare_dataset(
        source,
        data_dir,
        class_names=["cats", "dogs"],
        split="all",
        validation_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        max_pixels=10_000_000,
        min_side=8,
        progress=False,
    )
    return json.loads((data_dir / "manifest.json").read_text())


def test_prepare_then_pipeline_equals_predict_for_every_kind_of_photo(tmp_path, predictor):
    source = tmp_path / "source"
    files = {}
    for offset, class_name in enumerate(("cats", "dogs")):
        (source / class_name).mkdir(parents=True)
        # Different photos per class: identical bytes under two labels would be quarantined as a conflict.
        for name, data in _odd_files(10 * offset).items():
            (source / class_name / name).write_bytes(data)
            files[f"{class_name}/{name}"] = data
    manifest = _prepare_everything(source, tmp_path / "data")
    source_of = {entry["destination"]: entry["source"] for entry in manifest["files"] if entry["status"] == "ok"}
    assert len(source_of) == len(files)
    checked = 0
    for split in ("train", "validation", "test"):
        split_dir = tmp_path / "data" / split
        if not split_dir.is_dir():
            continue
        paths, _, _ = list_images(split_dir)
        dataset, _ = make_dataset(split_dir, image_size=predictor.image_size, batch_size=64)
        training_pixels = np.concatenate([images.numpy() for images, _ in dataset]).astype(np.uint8)
        for path, pixels in zip(paths, training_pixels):
            destination = Path(path).relative_to(tmp_path / "data").as_posix()
            original = files[source_of[destination]]
            # The service and `predict` receive the original upload, never the prepared file.
            np.testing.assert_array_equal(predictor.load_image(original), pixels, err_msg=destination)
            checked += 1
    assert checked == len(files)


def test_prepare_and_predict_give_a_broken_photo_the_same_reason(tmp_path, predictor):
    source = tmp_path / "source"
    for offset, class_name in enumerate(("cats", "dogs")):
        (source / class_name).mkdir(parents=True)
        (source / class_name / "plain.jpg").write_bytes(_odd_files(10 * offset)["plain.jpg"])
    # A JPEG signature with a broken body: a known format whose data does not decode.
    broken = b"\xff\xd8\xff" + bytes(400)
    (source / "cats" / "broken.jpg").write_bytes(broken)
    manifest = _prepare_everything(source, tmp_path / "data")
    (quarantined,) = [entry for entry in manifest["files"] if entry["status"] == "quarantined"]
    (predicted,) = predictor.predict([broken])
    assert quarantined["reason"] == predicted.error == "not a valid JPEG: no image header found"
