import numpy as np
import pytest
from PIL import Image

from catsdogs.data.augment import augment_batch
from catsdogs.data.dataset import list_images, make_dataset
from catsdogs.errors import CatsdogsError
from catsdogs.images import decode_and_resize

# Each file's red channel encodes its own index and its green channel its class,
# so any image can be traced back to the file and label it came from.
CAT_GREEN, DOG_GREEN = 40, 200


def make_split(root, per_class=6, size=(24, 30), class_names=("cats", "dogs")):
    for label, class_name in enumerate(class_names):
        folder = root / class_name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = np.zeros((*size, 3), np.uint8)
            pixels[..., 0] = 10 * index + label
            pixels[..., 1] = (CAT_GREEN, DOG_GREEN)[label] if len(class_names) == 2 else 60 * label
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def collect(dataset):
    images, labels = zip(*[(batch_images.numpy(), batch_labels.numpy()) for batch_images, batch_labels in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_shapes_dtypes_and_raw_pixel_range(tmp_path):
    dataset, class_names = make_dataset(make_split(tmp_path / "train"), image_size=(16, 20), batch_size=4)
    images, labels = collect(dataset)
    assert class_names == ["cats", "dogs"]
    assert images.shape == (12, 16, 20, 3) and images.dtype == np.float32
    assert labels.dtype == np.float32
    # Pixels stay in 0..255: the models rescale inside themselves, so scaling here would scale twice.
    assert images[..., 1].max() == DOG_GREEN and images.min() >= 0


def test_every_label_belongs_to_its_file_after_shuffling(tmp_path):
    dataset, _ = make_dataset(make_split(tmp_path / "train"), image_size=(16, 16), batch_size=5, shuffle=True, seed=3)
    for _ in range(2):
        images, labels = collect(dataset)
        green = images[:, 0, 0, 1]
        assert np.array_equal(green == DOG_GREEN, labels == 1.0)
        # Every file appears exactly once per epoch.
        file_ids = sorted(zip(images[:, 0, 0, 0].tolist(), labels.tolist()))
        assert file_ids == sorted((10.0 * i + label, float(label)) for label in (0, 1) for i in range(6))


def test_labels_follow_sorted_class_names(tmp_path):
    root = make_split(tmp_path / "train", per_class=2, class_names=("zebra", "ant", "moth"))
    paths, labels, class_names = list_images(root)
    assert class_names == ["ant", "moth", "zebra"]
    assert [p.split("/")[-2] for p in paths] == ["ant", "ant", "moth", "moth", "zebra", "zebra"]
    assert labels == [0, 0, 1, 1, 2, 2]
    dataset, _ = make_dataset(root, image_size=(8, 8), batch_size=6)
    assert collect(dataset)[1].dtype == np.int32


def test_validation_order_is_fixed_and_shuffle_is_seeded(tmp_path):
    root = make_split(tmp_path / "train")
    unshuffled = collect(make_dataset(root, image_size=(8, 8), batch_size=4)[0])[0][:, 0, 0, 0]
    assert list(unshuffled) == [10.0 * i for i in range(6)] + [10.0 * i + 1 for i in range(6)]
    first = collect(make_dataset(root, image_size=(8, 8), batch_size=4, shuffle=True, seed=7)[0])[0]
    second = collect(make_dataset(root, image_size=(8, 8), batch_size=4, shuffle=True, seed=7)[0])[0]
    other = collect(make_dataset(root, image_size=(8, 8), batch_size=4, shuffle=True, seed=8)[0])[0]
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_cache_gives_the_same_pixels_and_new_order_each_epoch(tmp_path):
    root = make_split(tmp_path / "train", per_class=10)
    plain = collect(make_dataset(root, image_size=(8, 8), batch_size=4)[0])[0]
    cached = collect(make_dataset(root, image_size=(8, 8), batch_size=4, cache=True)[0])[0]
    assert np.array_equal(plain, cached)
    shuffled, _ = make_dataset(root, image_size=(8, 8), batch_size=20, shuffle=True, seed=1, cache=True)
    orders = [collect(shuffled)[0][:, 0, 0, 0].tolist() for _ in range(3)]
    assert orders[0] != orders[1] or orders[1] != orders[2]


def test_augmentation_is_reproducible_per_seed_and_changes_per_epoch(tmp_path):
    root = make_split(tmp_path / "train")
    settings = dict(flip=True, rotation=0.1, zoom=0.1, translation=0.1, contrast=0.2, brightness=0.2)

    def epochs(seed):
        dataset, _ = make_dataset(root, image_size=(16, 16), batch_size=4, shuffle=True, seed=seed, augment=settings)
        return [collect(dataset)[0] for _ in range(2)]

    first, again = epochs(5), epochs(5)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])
    assert first[0].min() >= 0 and first[0].max() <= 255


def test_augment_batch_geometry():
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    images = np.repeat(np.stack([ramp] * 3, axis=-1)[None], 16, axis=0)
    unchanged = augment_batch(images, [1, 2], flip=False).numpy()
    np.testing.assert_allclose(unchanged, images, atol=1e-4)
    flipped = augment_batch(images, [1, 2], flip=True).numpy()
    mirrored = [np.allclose(image, images[0][:, ::-1], atol=1e-4) for image in flipped]
    kept = [np.allclose(image, images[0], atol=1e-4) for image in flipped]
    # Every image is either mirrored or untouched, and both happen in a batch of 16.
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    rotated = augment_batch(images, [1, 2], flip=False, rotation=0.1).numpy()
    assert not np.allclose(rotated, images)


def test_non_ascii_paths_go_through_the_pipeline(tmp_path):
    root = tmp_path / "데이터" / "train"
    for class_name in ("고양이", "강아지"):
        (root / class_name).mkdir(parents=True)
        Image.fromarray(np.full((10, 10, 3), 128, np.uint8)).save(root / class_name / "사진 1.jpg")
    dataset, class_names = make_dataset(root, image_size=(8, 8), batch_size=2)
    images, _ = collect(dataset)
    assert sorted(class_names) == class_names and len(images) == 2


def test_decode_and_resize_reads_png_and_jpeg(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = decode_and_resize((tmp_path / "a.png").read_bytes(), (20, 20)).numpy()
    assert out.dtype == np.uint8 and np.array_equal(out, pixels)


def test_missing_or_empty_splits_are_clear_errors(tmp_path):
    with pytest.raises(CatsdogsError, match="does not exist.*Received: split_dir="):
        list_images(tmp_path / "nowhere")
    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "train" / "dogs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "cats" / "a.png")
    with pytest.raises(CatsdogsError, match="'dogs' holds no images"):
        list_images(tmp_path / "train")
    (tmp_path / "train" / "dogs" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(CatsdogsError, match="'dogs' holds no images"):
        list_images(tmp_path / "train")
