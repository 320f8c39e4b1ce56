"""Shared fixtures: tiny synthetic photo folders in tmp_path, and a few real photos when they are available.

Every synthetic image has its own colour pattern, so no two files share their
bytes unless a test makes a duplicate on purpose.
"""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The service tests' fixtures (a session-wide export, a real `catsdogs serve`), shared with the page's test.
pytest_plugins = ["serve_fixtures"]

# CI checks out ../shared beside the repository, as on a developer's machine.
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
REAL_PHOTOS_DIR = SHARED_DIR / "datasets" / "dogs-vs-cats" / "train"


def _pattern(seed, size):
    """Return a distinct, smooth uint8 RGB array (smooth, so JPEG keeps it recognisable)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    red = (seed * 37 + x * 3) % 256
    green = (seed * 91 + y * 5) % 256
    blue = (seed * 53 + (x + y) * 2) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


@pytest.fixture
def make_image_bytes():
    """Factory: `make_image_bytes(seed, size=(48, 48), format="JPEG", mode="RGB", **save_options) -> bytes`."""

    def make(seed=0, size=(48, 48), format="JPEG", mode="RGB", **save_options):
        image = Image.fromarray(_pattern(seed, size), "RGB")
        if mode != "RGB":
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format, **save_options)
        return buffer.getvalue()

    return make


@pytest.fixture
def make_kaggle_folder(tmp_path, make_image_bytes):
    """Factory: write a Kaggle-style flat folder (cat.0.jpg, dog.0.jpg, ...) and return its path.

    Args of the factory:
        per_class: files per class, numbered 0..per_class-1.
        name: folder name under tmp_path.
        prefixes: the file-name prefixes, one per class.
    """

    def make(per_class=12, name="kaggle", prefixes=("cat", "dog")):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        for class_index, prefix in enumerate(prefixes):
            for number in range(per_class):
                data = make_image_bytes(seed=class_index * 1000 + number)
                (folder / f"{prefix}.{number}.jpg").write_bytes(data)
        return folder

    return make


@pytest.fixture
def kaggle_folder(make_kaggle_folder):
    """A Kaggle-style flat folder with 12 cats and 12 dogs (48x48 JPEGs)."""
    return make_kaggle_folder()


@pytest.fixture
def real_photos(tmp_path):
    """A flat folder with 4 real cat and 4 real dog photos copied from ../shared (skipped when absent)."""
    if not REAL_PHOTOS_DIR.is_dir():
        pytest.skip(f"real photos not found at {REAL_PHOTOS_DIR}")
    folder = tmp_path / "real"
    folder.mkdir()
    for prefix in ("cat", "dog"):
        for number in range(4):
            source = REAL_PHOTOS_DIR / f"{prefix}.{number}.jpg"
            if not source.is_file():
                pytest.skip(f"real photo missing: {source}")
            shutil.copyfile(source, folder / source.name)
    return folder


def tree_snapshot(root):
    """Return {relative path: bytes} for every file under root, to prove a folder did not change."""
    root = Path(root)
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def snapshot():
    """The `tree_snapshot` function, as a fixture."""
    return tree_snapshot
