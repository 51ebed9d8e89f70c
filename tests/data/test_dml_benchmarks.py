"""The DML benchmark loaders on tiny copies of the official layouts (tests/dml_fixtures.py): splits, counts, labels,
names, the zero-shot and query/gallery protocols, the PREFIX:ROOT form, and the errors for wrong layouts."""

from __future__ import annotations

import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import DatasetDict, Image
from dml_fixtures import (
    CARS_CLASSES,
    CUB_CLASSES,
    IMAGES_PER_CLASS,
    INSHOP_TEST_ITEMS,
    INSHOP_TRAIN_ITEMS,
    SOP_TEST_CLASSES,
    SOP_TRAIN_CLASSES,
    cars_class_name,
    write_cars196,
    write_cub200,
    write_inshop,
    write_sop,
)

from gsp_hub.data import (
    load_cars196,
    load_cub200,
    load_image_dataset,
    load_inshop,
    load_stanford_online_products,
    own_splits,
    zero_shot_split,
)
from gsp_hub.data import dml_benchmarks
from gsp_hub.data.dml_benchmarks import OfficialCounts

BENCHMARKS = {  # prefix: (writer, loader, class names in label order, classes per split, official counts text)
    "cub200": (write_cub200, load_cub200, list(CUB_CLASSES.values()), {"train": 4, "test": 4},
               "images 24 (official 11,788), classes 8 (official 200), train images 12 (official 5,864), "
               "test images 12 (official 5,924)"),
    "cars196": (write_cars196, load_cars196, [cars_class_name(c) for c in CARS_CLASSES], {"train": 4, "test": 4},
                "images 24 (official 16,185), classes 8 (official 196), train images 12 (official 8,054), "
                "test images 12 (official 8,131)"),
    "sop": (write_sop, load_stanford_online_products, [str(c) for c in SOP_TRAIN_CLASSES + SOP_TEST_CLASSES],
            {"train": 5, "test": 4}, "images 27 (official 120,053), classes 9 (official 22,634), train images 15 "
            "(official 59,551), test images 12 (official 60,502)"),
    "inshop": (write_inshop, load_inshop, list(INSHOP_TRAIN_ITEMS + INSHOP_TEST_ITEMS),
               {"train": 4, "query": 3, "gallery": 3}, "images 21 (official 52,712), classes 7 (official 7,982), "
               "train images 12 (official 25,882), query images 3 (official 14,218), gallery images 6 (official "
               "12,612)"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmarks")
    return {prefix: writer(root) for prefix, (writer, *_) in BENCHMARKS.items()}


def load_quietly(loader: Callable[[Path], DatasetDict], folder: Path) -> DatasetDict:
    """The loader's result; its count warning (fixtures are not the full release) is checked elsewhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return loader(folder)


@pytest.mark.parametrize("prefix", list(BENCHMARKS))
def test_loaders_return_the_official_splits_with_labels_and_names(prefix, folders):
    _, loader, names, classes_per_split, counts_text = BENCHMARKS[prefix]
    with pytest.warns(UserWarning, match=re.escape(counts_text)):
        dataset = loader(folders[prefix])
    assert list(dataset) == list(classes_per_split)
    assert dataset["train"].features["label"].names == names  # official order, training classes first
    first = 0
    for split, count in classes_per_split.items():
        labels = np.asarray(dataset[split]["label"])
        if split == "gallery":
            first -= count  # In-shop's query and gallery hold the same items
        assert sorted(set(labels.tolist())) == list(range(first, first + count)), split
        first += count
    image = dataset["train"][0]["image"]
    assert isinstance(image, PIL.Image.Image) and image.size == (8, 8)


def test_cub200_labels_follow_image_class_labels(folders):
    dataset = load_quietly(load_cub200, folders["cub200"])
    names = dataset["train"].features["label"].names
    raw = dataset["test"].cast_column("image", Image(decode=False))
    for row in raw:  # every image lies in its class folder: images/<class name>/...
        assert Path(row["image"]["path"]).parent.name == names[row["label"]]
    assert len(dataset["train"]) == len(dataset["test"]) == 4 * IMAGES_PER_CLASS


def test_sop_keeps_the_super_class_and_inshop_separates_items(folders):
    sop = load_quietly(load_stanford_online_products, folders["sop"])
    assert sop["train"].column_names == ["image", "label", "super_class_id"]
    expected = [1 if class_id % 2 else 2 for class_id in SOP_TEST_CLASSES for _ in range(IMAGES_PER_CLASS)]
    assert np.asarray(sop["test"]["super_class_id"]).tolist() == expected  # the fixture's odd ids are bicycles
    inshop = load_quietly(load_inshop, folders["inshop"])
    train, query, gallery = (set(np.asarray(inshop[split]["label"]).tolist()) for split in inshop)
    assert not train & (query | gallery) and query == gallery
    assert (len(inshop["query"]), len(inshop["gallery"])) == (3, 6)


def test_inshop_reads_the_flat_layout_too(tmp_path, folders):
    flat = load_quietly(load_inshop, write_inshop(tmp_path, flat=True))
    official = load_quietly(load_inshop, folders["inshop"])
    for split in official:
        assert list(flat[split]["label"]) == list(official[split]["label"])


@pytest.mark.parametrize("prefix", list(BENCHMARKS))
def test_zero_shot_split_trains_on_the_official_training_classes(prefix, folders):
    _, loader, names, classes_per_split, _ = BENCHMARKS[prefix]
    dataset = load_quietly(loader, folders[prefix])
    splits = zero_shot_split(dataset, validation_fraction=0.1)
    num_training = classes_per_split["train"]  # SOP and In-shop: not len(names) // 2
    assert splits.num_classes + splits.num_validation_classes == num_training
    assert splits.num_validation_classes == 2  # the last 2 training classes validate, never trained on
    assert set(np.asarray(splits.train["label"]).tolist()) == set(range(num_training - 2))
    assert set(np.asarray(splits.validation["label"]).tolist()) == {num_training - 2, num_training - 1}
    assert set(np.asarray(splits.test["label"]).tolist()) == set(range(num_training, len(names)))
    assert splits.num_test_queries == 0


def test_inshop_query_gallery_protocol(folders):
    dataset = load_quietly(load_inshop, folders["inshop"])
    splits = zero_shot_split(dataset, validation_fraction=0.1, query_split="query", gallery_split="gallery")
    assert splits.num_test_queries == 3 and len(splits.test) == 9
    assert list(splits.test["label"]) == list(dataset["query"]["label"]) + list(dataset["gallery"]["label"])
    assert "3 query rows ('query') searching 6 gallery rows ('gallery')" in splits.summary
    own = own_splits(dataset, query_split="query", gallery_split="gallery")
    assert (own.num_test_queries, len(own.test), len(own.train)) == (3, 9, 12)


@pytest.mark.parametrize("prefix", list(BENCHMARKS))
def test_prefix_form_through_load_image_dataset(prefix, folders):
    _, loader, *_ = BENCHMARKS[prefix]
    direct = load_quietly(loader, folders[prefix])
    with pytest.warns(UserWarning, match="not the full official release"):
        loaded = load_image_dataset(f"{prefix}:{folders[prefix]}", progress=False)
    assert list(loaded) == list(direct)
    for split in direct:
        assert loaded[split].column_names == ["image", "label"]  # as for every source (SOP's super class dropped)
        assert list(loaded[split]["label"]) == list(direct[split]["label"])
    assert loaded["train"].features["label"] == direct["train"].features["label"]


def test_no_warning_when_the_counts_are_the_official_ones(folders, monkeypatch):
    monkeypatch.setattr(dml_benchmarks, "CUB200_COUNTS", OfficialCounts(24, 8, {"train": 12, "test": 12}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cub200(folders["cub200"])


# --- errors -----------------------------------------------------------------------------------------------------

def test_wrong_root_names_the_expected_files_and_the_subfolder(tmp_path, folders):
    with pytest.raises(FileNotFoundError, match=r"CUB-200-2011: .*no_such is not a folder; pass the CUB_200_2011"):
        load_image_dataset(f"cub200:{tmp_path / 'no_such'}")
    parent = folders["cub200"].parent
    with pytest.raises(FileNotFoundError, match=r"has no images.txt, image_class_labels.txt, classes.txt; .*its "
                       r"subfolder .*CUB_200_2011 holds them: pass that folder"):
        load_cub200(parent)
    with pytest.raises(FileNotFoundError, match=r"has no Ebay_train.txt, Ebay_test.txt"):
        load_stanford_online_products(folders["cub200"])
    with pytest.raises(FileNotFoundError, match=r"has no Eval/list_eval_partition.txt or list_eval_partition.txt"):
        load_inshop(folders["sop"])
    with pytest.raises(ValueError, match=r"'cub200:' names no folder; pass cub200:/path"):
        load_image_dataset("cub200:")
    with pytest.raises(FileNotFoundError, match=r"benchmark folder as PREFIX:ROOT \(PREFIX one of cub200, cars196"):
        load_image_dataset(f"cub:{folders['cub200']}")


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_missing_list_file_image_and_bad_lines_are_clear_errors(tmp_path, folders):
    cub = copy_of(folders["cub200"], tmp_path)
    (cub / "classes.txt").rename(cub / "classes.txt.bak")
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011 has no classes.txt"):
        load_cub200(cub)
    (cub / "classes.txt.bak").write_text("".join(f"{c} {name}\n" for c, name in list(CUB_CLASSES.items())[1:]))
    (cub / "classes.txt.bak").rename(cub / "classes.txt")
    with pytest.raises(ValueError, match=r"1 class ids of image_class_labels.txt have no entry in .*classes.txt: "
                       r"\[1\]"):
        load_cub200(cub)
    (cub / "classes.txt").write_text("".join(f"{c} {name}\n" for c, name in CUB_CLASSES.items()))
    lines = (cub / "images.txt").read_text().splitlines()
    (cub / "images.txt").write_text("\n".join(lines[:2] + ["three"] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match=r"images.txt, line 3: 'three' does not read as 'image_id\(int\) "
                       r"path\(str\)'"):
        load_cub200(cub)
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    next((cub / "images").rglob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 24 images listed in .*images.txt do not exist"):
        load_cub200(cub)


def test_inshop_partition_errors(tmp_path, folders):
    inshop = copy_of(folders["inshop"], tmp_path)
    list_file = inshop / "Eval" / "list_eval_partition.txt"
    original = list_file.read_text()
    list_file.write_text(original.replace(" query\n", " probe\n", 1))
    with pytest.raises(ValueError, match=r"evaluation status\(es\) \['probe'\]; expected only \['train', 'query', "
                       r"'gallery'\]"):
        load_inshop(inshop)
    list_file.write_text(original.replace(f"{INSHOP_TEST_ITEMS[0]} gallery", f"{INSHOP_TEST_ITEMS[0]} train", 1))
    with pytest.raises(ValueError, match=rf"puts 1 item\(s\) in train and in query/gallery \(e.g. "
                       rf"{INSHOP_TEST_ITEMS[0]}\)"):
        load_inshop(inshop)
    list_file.write_text(original.replace(" query\n", " gallery\n"))
    with pytest.raises(ValueError, match=r"no image of .*list_eval_partition.txt is in the 'query' split"):
        load_inshop(inshop)


def test_cars196_mat_errors(tmp_path, folders, monkeypatch):
    from scipy.io import savemat

    cars = copy_of(folders["cars196"], tmp_path)
    savemat(cars / "cars_annos.mat", {"class_names": np.array(["a", "b"], dtype=object)})
    with pytest.raises(ValueError, match=r"is not the devkit's cars_annos.mat: expected a struct array "
                       r"'annotations'.*found \['class_names'\]"):
        load_cars196(cars)
    for content in (b"<html><body>404 Not Found</body></html>" * 4, b"truncated"):  # failed downloads
        (cars / "cars_annos.mat").write_bytes(content)
        with pytest.raises(ValueError, match=r"cannot read .*cars_annos.mat as a MATLAB file"):
            load_cars196(cars)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    with pytest.raises(ImportError, match=r"needs scipy, which is not installed: pip install scipy"):
        load_cars196(cars)
