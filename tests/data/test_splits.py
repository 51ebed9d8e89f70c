"""Train / validation / test splits: disjoint classes (zero-shot) or rows (own), counted against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from gsp_hub.data import describe_classes, load_image_dataset, own_splits, zero_shot_split


@pytest.fixture(scope="module")
def fmnist() -> DatasetDict:
    return load_image_dataset("fashion-mnist-subset", verify_images=False)


def labels_only(num_classes: int, per_class: int, splits: tuple[str, ...] = ("train",)) -> DatasetDict:
    """A DatasetDict of ``per_class`` rows per class in each split (an ``image`` column of row numbers)."""
    features = Features({"image": Value("int64"), "label": ClassLabel(names=[f"c{i}" for i in range(num_classes)])})
    labels = np.repeat(np.arange(num_classes), per_class)
    return DatasetDict({name: Dataset.from_dict({"image": np.arange(len(labels)), "label": labels}, features=features)
                        for name in splits})


def label_set(rows: Dataset) -> set[int]:
    return set(np.asarray(rows["label"]).tolist())


def test_zero_shot_validation_classes_come_from_the_training_half(fmnist):
    splits = zero_shot_split(fmnist, validation_fraction=0.1)
    all_labels = np.concatenate([np.asarray(fmnist[name]["label"]) for name in fmnist])
    assert (label_set(splits.train), label_set(splits.validation), label_set(splits.test)) == (
        {0, 1, 2}, {3, 4}, {5, 6, 7, 8, 9})  # 10 % of 5 classes rounds up to the minimum of 2
    assert (splits.num_classes, splits.num_validation_classes, splits.num_test_classes) == (3, 2, 5)
    assert len(splits.validation) == int(np.isin(all_labels, [3, 4]).sum()) == 1400
    assert len(splits.train) == int(np.isin(all_labels, [0, 1, 2]).sum())
    assert splits.describe("validation") == "classes 3-4 (Dress, Coat)"
    assert "validation 1400 rows of classes 3-4 from train+test (Dress, Coat), choose the model" in splits.summary
    assert "reported only" in splits.summary


def test_zero_shot_validation_fraction_rounds_up_and_keeps_two_training_classes():
    dataset = labels_only(40, 3)
    splits = zero_shot_split(dataset, validation_fraction=0.1)  # 20 classes in the training half: 2 validate
    assert label_set(splits.validation) == {18, 19} and label_set(splits.train) == set(range(18))
    splits = zero_shot_split(dataset, validation_fraction=0.25)  # ceil(5)
    assert label_set(splits.validation) == set(range(15, 20))
    assert zero_shot_split(dataset).validation is None  # 0: no validation split
    with pytest.raises(ValueError, match="validation_fraction=0.5 holds out 2 of the 2 training classes"):
        zero_shot_split(labels_only(4, 3), validation_fraction=0.5)


def split_by_class(classes_of_split: dict[str, list[int]], num_classes: int, per_class: int = 3) -> DatasetDict:
    """A DatasetDict whose splits hold the given classes (``per_class`` rows each)."""
    features = Features({"image": Value("int64"), "label": ClassLabel(names=[f"c{i}" for i in range(num_classes)])})
    return DatasetDict({name: Dataset.from_dict({"image": np.arange(len(classes) * per_class),
                                                 "label": np.repeat(classes, per_class)}, features=features)
                        for name, classes in classes_of_split.items()})


def test_zero_shot_keeps_the_training_classes_of_a_data_set_split_by_class():
    dataset = split_by_class({"train": [0, 1, 2, 3, 4, 5], "test": [6, 7, 8, 9]}, 10)  # 6 training classes, not 5
    splits = zero_shot_split(dataset, validation_fraction=0.1)
    assert (label_set(splits.train), label_set(splits.validation), label_set(splits.test)) == (
        {0, 1, 2, 3}, {4, 5}, {6, 7, 8, 9})
    assert (splits.num_classes, splits.num_validation_classes, splits.num_test_classes) == (4, 2, 4)
    # Otherwise the first half by id, as before: a training class also in test, or training classes not first.
    for classes in ({"train": [0, 1, 2, 3, 4, 5], "test": [5, 6, 7, 8, 9]}, {"train": [0, 1, 2, 3, 4, 9],
                                                                               "test": [5, 6, 7, 8]}):
        assert zero_shot_split(split_by_class(classes, 10)).num_classes == 5


def test_zero_shot_keeps_the_own_validation_classes_of_a_data_set_split_by_class():
    dataset = split_by_class({"train": [0, 1, 2, 3], "validation": [4, 5], "test": [6, 7, 8, 9]}, 10)
    splits = zero_shot_split(dataset, validation_fraction=0.1)  # any positive fraction: the data set's own classes
    assert (label_set(splits.train), label_set(splits.validation), label_set(splits.test)) == (
        {0, 1, 2, 3}, {4, 5}, {6, 7, 8, 9})
    assert (splits.num_classes, splits.num_validation_classes, splits.num_test_classes) == (4, 2, 4)
    assert "validation 6 rows of classes 4-5 from validation" in splits.summary
    unselected = zero_shot_split(dataset)  # 0: no validation, and its classes are not tested either
    assert unselected.validation is None and label_set(unselected.test) == {6, 7, 8, 9}
    # Not validation classes of its own (a single class, not right after the training classes, or shared with the
    # test split): the last training classes validate, as before, and every other class is tested.
    for classes in ([4], [5, 6], [4, 5]):
        others = sorted(set(range(4, 10)) - set(classes)) + ([5] if classes == [4, 5] else [])
        splits = zero_shot_split(split_by_class({"train": [0, 1, 2, 3], "validation": classes, "test": others}, 10),
                                 validation_fraction=0.1)
        assert (label_set(splits.train), label_set(splits.validation), label_set(splits.test)) == (
            {0, 1}, {2, 3}, set(range(4, 10))), classes


def test_query_gallery_test_rows_in_both_protocols():
    dataset = split_by_class({"train": [0, 1, 2, 3], "query": [4, 5, 6], "gallery": [4, 5, 6]}, 7)
    dataset["gallery"] = dataset["gallery"].map(lambda row: {"image": row["image"] + 100})
    for splits in (zero_shot_split(dataset, query_split="query", gallery_split="gallery"),
                   own_splits(dataset, query_split="query", gallery_split="gallery")):
        assert splits.num_test_queries == 9 and splits.num_test_classes == 3
        assert np.asarray(splits.test["image"]).tolist() == list(range(9)) + list(range(100, 109))  # queries first
        assert "test 9 query rows ('query') searching 9 gallery rows ('gallery')" in splits.summary
    assert zero_shot_split(dataset).num_test_queries == 0  # leave-one-out over query + gallery
    for kwargs, message in (({"query_split": "query"}, "needs both, two different splits"),
                            ({"query_split": "query", "gallery_split": "query"}, "needs both, two different"),
                            ({"query_split": "query", "gallery_split": "probe"}, r"unknown split\(s\) \['probe'\]"),
                            ({"query_split": "query", "gallery_split": "gallery", "test_splits": ["query"]},
                             "both name the test rows")):
        with pytest.raises(ValueError, match=message):
            zero_shot_split(dataset, **kwargs)
    with pytest.raises(ValueError, match="both name the test rows"):
        own_splits(dataset, query_split="query", gallery_split="gallery", test_split="gallery")


def test_own_splits_hold_out_a_stratified_seeded_validation_part():
    dataset = labels_only(5, 10, splits=("train", "test"))
    splits = own_splits(dataset, validation_fraction=0.2, seed=3)
    train_rows, validation_rows = np.asarray(splits.train["image"]), np.asarray(splits.validation["image"])
    assert not set(train_rows) & set(validation_rows) and len(train_rows) + len(validation_rows) == 50
    assert np.bincount(np.asarray(splits.validation["label"])).tolist() == [2] * 5  # ceil(0.2 x 10) per class
    again = own_splits(dataset, validation_fraction=0.2, seed=3)
    assert np.array_equal(np.asarray(again.validation["image"]), validation_rows)
    other = own_splits(dataset, validation_fraction=0.2, seed=4)
    assert not np.array_equal(np.asarray(other.validation["image"]), validation_rows)
    assert own_splits(dataset).validation is None


def test_own_splits_use_a_named_or_detected_validation_split():
    dataset = labels_only(3, 4, splits=("train", "validation", "test"))
    splits = own_splits(dataset, validation_fraction=0.5)  # detected: no rows are held out of train
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (12, 12, 12)
    renamed = labels_only(3, 4, splits=("fit", "dev", "holdout"))
    splits = own_splits(renamed, train_split="fit", validation_split="dev", test_split="holdout")
    assert splits.validation is renamed["dev"] and splits.test is renamed["holdout"]
    with pytest.raises(ValueError, match="must name different splits"):
        own_splits(renamed, train_split="fit", validation_split="fit", test_split="holdout")
    with pytest.raises(ValueError, match="unknown split"):
        own_splits(renamed, train_split="fit", test_split="eval")


def test_describe_classes_lists_ranges_ids_and_names():
    names = ["T-shirt/top", "Trouser", "Pullover", "3", "Coat"]
    assert describe_classes([0, 1, 2], names) == "classes 0-2 (T-shirt/top, Trouser, Pullover)"
    assert describe_classes([3], names) == "class 3"
    assert describe_classes([1, 4], names) == "classes 1, 4 (Trouser, Coat)"
    assert describe_classes(range(8), [str(i) for i in range(8)]) == "classes 0-7"
    assert describe_classes(range(8), [f"n{i}" for i in range(8)], limit=2) == "classes 0-7 (n0, n1, ... (6 more))"
