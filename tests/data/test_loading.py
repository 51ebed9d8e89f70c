"""gsp_hub.data loading and splits: every local source type, column detection, errors, bad images, class splits."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import PIL.Image
import pytest
from datasets import ClassLabel, Dataset, Image

from gsp_hub.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUBSET_PATH,
    load_image_dataset,
    make_splits,
    own_splits,
    with_image_transform,
    zero_shot_split,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_bytes(value: int) -> dict:
    """An undecoded datasets.Image value: an 8x8 PNG of grey level ``value``."""
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8), (value, value, value)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def make_image_folder(root: Path, images_per_class: dict[str, int], corrupt: tuple[str, ...] = ()) -> Path:
    """root/<class>/<i>.jpg random 20x24 images (plus a greyscale and an RGBA PNG in the first class);
    each class named in ``corrupt`` gets one extra JPEG cut in half (truncated: PIL cannot decode it)."""
    rng = np.random.default_rng(0)
    for class_index, (name, count) in enumerate(images_per_class.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{i}.jpg").write_bytes(jpeg_bytes(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)))
        if class_index == 0:
            PIL.Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "grey.png")
            PIL.Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
        if name in corrupt:
            whole = jpeg_bytes(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
            (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    return root


def write_parquet(path: Path, columns: dict[str, list], features: dict | None = None) -> Path:
    Dataset.from_dict(columns, features=datasets.Features(features) if features else None).to_parquet(str(path))
    return path


# --- embedded default -------------------------------------------------------------------------------------------

def test_embedded_fashion_mnist_subset_is_a_real_balanced_dataset():
    dataset = load_image_dataset("fashion-mnist-subset")
    assert {name: len(ds) for name, ds in dataset.items()} == {"train": 6000, "test": 1000}
    features = dataset["train"].features
    assert isinstance(features["image"], Image)
    assert features["label"].names == list(FASHION_MNIST_CLASSES)
    assert "MIT" in dataset["train"].info.license
    assert np.bincount(np.asarray(dataset["train"]["label"])).tolist() == [600] * 10
    assert np.bincount(np.asarray(dataset["test"]["label"])).tolist() == [100] * 10
    image = dataset["test"][3]["image"]
    with np.load(FASHION_MNIST_SUBSET_PATH) as arrays:
        assert np.array_equal(np.asarray(image), arrays["test_images"][3])
        assert dataset["test"][3]["label"] == arrays["test_labels"][3]


def test_shipped_npz_is_small_and_equals_a_rebuild_by_the_script(tmp_path):
    assert FASHION_MNIST_SUBSET_PATH.stat().st_size <= 5 * 1024 * 1024
    if not all((DEBIAN_FMNIST / f"{name}-ubyte.gz").is_file()
               for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    rebuilt = tmp_path / "rebuilt.npz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_fmnist_subset.py"), "--output", str(rebuilt)],
                   check=True, capture_output=True)
    with np.load(FASHION_MNIST_SUBSET_PATH) as shipped, np.load(rebuilt) as fresh:
        assert sorted(shipped.files) == sorted(fresh.files)
        for key in shipped.files:
            assert shipped[key].dtype == fresh[key].dtype and np.array_equal(shipped[key], fresh[key]), key


# --- local sources ----------------------------------------------------------------------------------------------

def test_image_folder_with_class_folders(tmp_path):
    root = make_image_folder(tmp_path / "pets", {"cat": 3, "dog": 2, "emu": 2})
    dataset = load_image_dataset(root)
    train = dataset["train"]
    assert list(dataset) == ["train"] and len(train) == 3 + 2 + 2 + 2  # + grey.png, rgba.png in cat/
    assert train.features["label"].names == ["cat", "dog", "emu"]
    assert np.bincount(np.asarray(train["label"])).tolist() == [5, 2, 2]


def test_image_folder_with_split_folders(tmp_path):
    make_image_folder(tmp_path / "root" / "train", {"a": 2, "b": 2})
    make_image_folder(tmp_path / "root" / "test", {"a": 1, "b": 1})
    dataset = load_image_dataset(tmp_path / "root", split="test")
    assert list(dataset) == ["test"] and len(dataset["test"]) == 4
    assert dataset["test"].features["label"].names == ["a", "b"]


def test_parquet_file_with_other_column_names_and_sparse_integer_labels(tmp_path):
    labels = [11, 3, 7, 3, 11, 11]  # e.g. 1-based or filtered class ids: encoded to 0..2 in sorted order
    path = write_parquet(tmp_path / "d.parquet",
                         {"img": [png_bytes(v) for v in range(6)], "fine_label": labels, "caption": ["x"] * 6},
                         {"img": Image(), "fine_label": datasets.Value("int64"), "caption": datasets.Value("string")})
    dataset = load_image_dataset(path)
    train = dataset["train"]
    assert train.column_names == ["image", "label"]
    assert train.features["label"].names == ["3", "7", "11"]
    assert np.asarray(train["label"]).tolist() == [2, 0, 1, 0, 2, 2]
    assert train[4]["image"].getpixel((0, 0)) == (4, 4, 4)  # rows kept in order


def test_string_labels_and_explicit_columns(tmp_path):
    path = write_parquet(tmp_path / "d.parquet",
                         {"photo_a": [png_bytes(1)] * 4, "photo_b": [png_bytes(2)] * 4,
                          "species": ["owl", "ant", "owl", "bee"], "label": [0, 0, 0, 0]},
                         {"photo_a": Image(), "photo_b": Image(), "species": datasets.Value("string"),
                          "label": datasets.Value("int64")})
    with pytest.raises(ValueError, match=r"several candidate image columns \['photo_a', 'photo_b'\].*--image-column"):
        load_image_dataset(path)
    train = load_image_dataset(path, image_column="photo_b", label_column="species")["train"]
    assert train.features["label"].names == ["ant", "bee", "owl"]
    assert np.asarray(train["label"]).tolist() == [2, 0, 2, 1]
    assert train[0]["image"].getpixel((0, 0)) == (2, 2, 2)


def test_plain_folder_of_parquet_files_gives_one_split_per_file_name(tmp_path):
    features = {"image": Image(), "label": ClassLabel(names=["a", "b"])}
    write_parquet(tmp_path / "train.parquet", {"image": [png_bytes(1)] * 3, "label": [0, 1, 1]}, features)
    write_parquet(tmp_path / "test.parquet", {"image": [png_bytes(2)] * 2, "label": [1, 0]}, features)
    dataset = load_image_dataset(tmp_path, progress=False)
    assert {name: len(ds) for name, ds in dataset.items()} == {"train": 3, "test": 2}
    assert dataset["test"].features["label"].names == ["a", "b"]


def test_image_column_of_file_paths_is_cast_to_images(tmp_path):
    paths = []
    for value in (10, 20, 30):
        paths.append(str(tmp_path / f"{value}.png"))
        PIL.Image.new("L", (6, 5), value).save(paths[-1])
    path = write_parquet(tmp_path / "d.parquet", {"file": paths, "target": [1, 0, 1]})
    train = load_image_dataset(path, image_column="file", progress=False)["train"]
    assert isinstance(train.features["image"], Image) and train.features["label"].names == ["0", "1"]
    assert train[2]["image"].getpixel((0, 0)) == 30


def test_classlabel_with_absent_classes_is_reencoded(tmp_path):
    features = {"image": Image(), "label": ClassLabel(names=["a", "b", "c", "d"])}
    path = write_parquet(tmp_path / "d.parquet", {"image": [png_bytes(0)] * 3, "label": [3, 1, 3]}, features)
    train = load_image_dataset(path)["train"]
    assert train.features["label"].names == ["b", "d"]
    assert np.asarray(train["label"]).tolist() == [1, 0, 1]


def test_hub_layout_folder_tiny_imagenet():
    folder = SHARED_DATA / "tiny-imagenet-200"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not available")
    dataset = load_image_dataset(folder, verify_images=False)  # no decoding: only the arrow tables are read
    assert {name: len(ds) for name, ds in dataset.items()} == {"train": 50000, "valid": 10000}
    assert dataset["train"].features["label"].num_classes == 200
    splits = zero_shot_split(dataset, train_splits=["train"], test_splits=["valid"])
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.num_test_classes) == (25000, 5000, 100, 100)
    assert np.asarray(splits.test["label"]).min() == 100


# --- errors -----------------------------------------------------------------------------------------------------

def test_missing_path_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match=r"no_such_folder.*no such file or folder.*Hub id"):
        load_image_dataset(missing)
    with pytest.raises(FileNotFoundError, match="cifar10"):
        load_image_dataset("cifar10")  # a bare name is not a Hub id


def test_unsupported_file_and_empty_folder(tmp_path):
    (tmp_path / "labels.txt").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.txt file; expected a folder, a \.parquet file, a \.csv / \.jsonl"):
        load_image_dataset(tmp_path / "labels.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no data set"):
        load_image_dataset(tmp_path / "empty")


def test_hub_id_takes_the_hub_path_and_fails_clearly_offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"Hub dataset 'someorg/some-images'.*pass a local folder"):
        load_image_dataset("someorg/some-images")


def test_no_label_column_lists_columns_and_flag(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"image": [png_bytes(0)] * 2, "caption": ["a", "b"]},
                         {"image": Image(), "caption": datasets.Value("string")})
    with pytest.raises(ValueError, match=r"no label column found among the columns .*'caption'.*--label-column"):
        load_image_dataset(path)
    with pytest.raises(ValueError, match=r"--label-column / label_column='kind' is not a column"):
        load_image_dataset(path, label_column="kind")


def test_no_image_column(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"no image column found among the columns .*'text'.*--image-column"):
        load_image_dataset(path)


def test_fewer_than_two_classes_and_unlabelled_rows(tmp_path):
    one = write_parquet(tmp_path / "one.parquet", {"image": [png_bytes(0)] * 3, "label": [4, 4, 4]},
                        {"image": Image(), "label": datasets.Value("int64")})
    with pytest.raises(ValueError, match=r"1 class\(es\) \['4'\]; metric learning needs at least 2"):
        load_image_dataset(one)
    unlabelled = write_parquet(tmp_path / "neg.parquet", {"image": [png_bytes(0)] * 3, "label": [0, 1, -1]},
                               {"image": Image(), "label": datasets.Value("int64")})
    with pytest.raises(ValueError, match=r"negative \(unlabelled\?\) labels.*\{'train': 1\}"):
        load_image_dataset(unlabelled)


def test_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['valid'\]; the data set has \['train', 'test'\]"):
        load_image_dataset("fashion-mnist-subset", split="valid")


# --- undecodable images -----------------------------------------------------------------------------------------

def test_corrupt_image_is_a_clear_error_naming_the_row(tmp_path):
    root = make_image_folder(tmp_path / "pets", {"cat": 2, "dog": 2}, corrupt=("dog",))
    with pytest.raises(ValueError, match=r"1 of 7 images cannot be decoded: row \d+ \(.*dog/broken\.jpg\).*"
                                         r"--skip-bad-images"):
        load_image_dataset(root, progress=False)


def test_corrupt_image_is_skipped_with_a_counted_warning(tmp_path):
    root = make_image_folder(tmp_path / "pets", {"cat": 2, "dog": 2}, corrupt=("dog",))
    with pytest.warns(UserWarning, match=r"skipped 1 of 7 images that cannot be decoded: row \d+ .*broken\.jpg"):
        dataset = load_image_dataset(root, skip_bad_images=True, progress=False)
    train = dataset["train"]
    assert len(train) == 6 and np.bincount(np.asarray(train["label"])).tolist() == [4, 2]
    assert all(image.size == (24, 20) for image in train["image"])  # every kept row decodes


def test_class_whose_only_image_is_corrupt_disappears(tmp_path):
    root = make_image_folder(tmp_path / "pets", {"cat": 1, "dog": 1, "yak": 0}, corrupt=("yak",))
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        train = load_image_dataset(root, skip_bad_images=True, progress=False)["train"]
    assert train.features["label"].names == ["cat", "dog"]
    assert sorted(set(np.asarray(train["label"]).tolist())) == [0, 1]


def test_unverified_corrupt_image_fails_in_the_transform_naming_the_file(tmp_path):
    root = make_image_folder(tmp_path / "pets", {"cat": 1, "dog": 1}, corrupt=("dog",))
    train = load_image_dataset(root, verify_images=False)["train"]
    paths = train.cast_column("image", Image(decode=False))["image"]
    bad_row = next(row for row, value in enumerate(paths) if value["path"].endswith("broken.jpg"))
    transformed = with_image_transform(train, lambda image: image)
    with pytest.raises(ValueError, match=r"cannot decode the image .*dog/broken\.jpg"):
        transformed[bad_row]
    with pytest.raises(ValueError, match="skip_bad_images=True needs verify_images=True"):
        load_image_dataset(root, verify_images=False, skip_bad_images=True)


# --- splits -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fmnist():
    return load_image_dataset("fashion-mnist-subset")


def test_zero_shot_split_pools_all_splits_and_separates_classes(fmnist):
    splits = zero_shot_split(fmnist)
    all_labels = np.concatenate([np.asarray(fmnist[name]["label"]) for name in fmnist])
    expected_train = sum(int((all_labels == c).sum()) for c in range(5))  # brute-force count over all rows
    train_labels, test_labels = np.asarray(splits.train["label"]), np.asarray(splits.test["label"])
    assert (splits.num_classes, splits.num_test_classes, splits.protocol) == (5, 5, "zero-shot")
    assert len(train_labels) == expected_train == 3500 and len(test_labels) == len(all_labels) - expected_train
    assert set(train_labels.tolist()) == {0, 1, 2, 3, 4} and set(test_labels.tolist()) == {5, 6, 7, 8, 9}
    assert "classes 0-4 from train+test" in splits.summary


def test_zero_shot_split_from_named_splits(fmnist):
    splits = zero_shot_split(fmnist, train_splits=["train"], test_splits=["test"])
    assert (len(splits.train), len(splits.test)) == (3000, 500)
    with pytest.raises(ValueError, match=r"test_splits=\['valid'\]: unknown split"):
        zero_shot_split(fmnist, test_splits=["valid"])


def test_own_splits_and_dispatch(fmnist):
    splits = make_splits(fmnist, "own")
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.protocol) == (6000, 1000, 10, "own")
    with pytest.raises(ValueError, match="no test split"):
        own_splits(load_image_dataset("fashion-mnist-subset", split="train"))
    with pytest.raises(ValueError, match="split protocol 'random' is unknown"):
        make_splits(fmnist, "random")


def test_zero_shot_split_needs_four_classes(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"image": [png_bytes(0)] * 3, "label": [0, 1, 2]},
                         {"image": Image(), "label": datasets.Value("int64")})
    with pytest.raises(ValueError, match="needs at least 4 classes.*own"):
        zero_shot_split(load_image_dataset(path))
