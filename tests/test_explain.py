"""`catsdogs explain`: Grad-CAM overlays and feature-map grids for photos of a run."""

import pytest

import fake_runs
from catsdogs.cli import main


@pytest.fixture(scope="module")
def run_and_photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data_dir = fake_runs.make_data(root, per_class=2)
    run = fake_runs.make_run(root / "runs", data_dir)
    photos = sorted(str(path) for path in (data_dir / "test").rglob("*.png"))[:2]
    return run, photos


def test_explain_writes_overlays_and_feature_maps(run_and_photos, tmp_path, capsys):
    run, photos = run_and_photos
    assert main(["explain", str(run.path), *photos, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for photo in photos:
        stem = photo.rsplit("/", 1)[-1].removesuffix(".png")
        assert (tmp_path / f"{stem}_gradcam.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{stem}_features_last_conv.png").is_file()
    assert "grad-cam:" in printed and "feature maps:" in printed


def test_explain_defaults_to_the_run_figures_folder(run_and_photos):
    run, photos = run_and_photos
    assert main(["explain", str(run.path), photos[0], "--no-feature-maps", "--layer", "last_conv"]) == 0
    written = sorted(path.name for path in (run.figures_dir / "explain").iterdir())
    assert written == [photos[0].rsplit("/", 1)[-1].removesuffix(".png") + "_gradcam.png"]


def test_a_bad_photo_is_reported_and_the_rest_explained(run_and_photos, tmp_path, capsys):
    run, photos = run_and_photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["explain", str(run.path), str(broken), photos[0], "--out", str(tmp_path / "out")]) == 1
    assert "broken.jpg: ERROR" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*_gradcam.png"))) == 1


def test_unknown_layer_lists_valid_layers(run_and_photos, capsys):
    run, photos = run_and_photos
    assert main(["explain", str(run.path), photos[0], "--layer", "conv_99"]) == 2
    error = capsys.readouterr().err
    assert "Pass one of these to --layer: identity, last_conv" in error and "Received: layer=conv_99" in error
