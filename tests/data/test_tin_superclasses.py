"""The hand-curated Tiny-ImageNet super-classes: a partition of the 200 classes, 16 targets of 5, 4 nuisance groups."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import gsp_hub.data.tin_superclasses as module
from gsp_hub.data.tin_superclasses import (
    TIN_NUISANCE_CLASSES,
    TIN_NUISANCE_SUPERCLASSES,
    TIN_SUPERCLASS_NAMES,
    TIN_TARGET_SUPERCLASSES,
    TIN_TEST_FINE_CLASSES,
    TIN_TRAIN_FINE_CLASSES,
    TIN_UNUSED_CLASSES,
)

CLASSES_TSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "tiny-imagenet-200" / "classes.tsv"


def test_every_class_is_in_exactly_one_place() -> None:
    placed = [c for group in TIN_TARGET_SUPERCLASSES + TIN_NUISANCE_SUPERCLASSES for c in group.classes]
    placed += [c for classes in TIN_UNUSED_CLASSES.values() for c in classes]
    assert [c for c, n in Counter(placed).items() if n > 1] == []  # no class in two super-classes
    assert sorted(placed) == list(range(200))


def test_sixteen_targets_of_five_and_four_nuisance_groups() -> None:
    assert len(TIN_TARGET_SUPERCLASSES) == 16 and len(TIN_NUISANCE_SUPERCLASSES) == 4
    names = [group.name for group in TIN_TARGET_SUPERCLASSES + TIN_NUISANCE_SUPERCLASSES]
    assert len(set(names)) == 20 and TIN_SUPERCLASS_NAMES == tuple(names[:16])
    for group in TIN_TARGET_SUPERCLASSES:
        assert len(group.classes) == 5 and list(group.classes) == sorted(group.classes), group.name
        assert group.train_classes == group.classes[:3] and group.test_classes == group.classes[3:], group.name
        assert group.reason
    assert all(group.reason and group.classes for group in TIN_NUISANCE_SUPERCLASSES)
    assert len(TIN_TRAIN_FINE_CLASSES) == 48 and len(TIN_TEST_FINE_CLASSES) == 32
    assert not set(TIN_TRAIN_FINE_CLASSES) & set(TIN_TEST_FINE_CLASSES)
    targets = {c for group in TIN_TARGET_SUPERCLASSES for c in group.classes}
    assert len(TIN_NUISANCE_CLASSES) == 19 and not targets & set(TIN_NUISANCE_CLASSES)
    dogs = TIN_TARGET_SUPERCLASSES[TIN_SUPERCLASS_NAMES.index("dogs")]
    assert dogs.train_classes == (24, 25, 26) and dogs.test_classes == (28, 29)  # Labrador (27) left out


def test_docstring_table_lists_the_train_and_test_fine_classes() -> None:
    """The module docstring's table is the documentation of which fine classes are used: it must match the code."""
    rows = [line for line in module.__doc__.splitlines() if line[:2].strip().isdigit()]
    documented = [[cell.strip() for cell in row.split("  ") if cell.strip()] for row in rows]
    assert documented == [
        [f"{label} {group.name}", ", ".join(name for _, name in group.members[:3]),
         ", ".join(name for _, name in group.members[3:])]
        for label, group in enumerate(TIN_TARGET_SUPERCLASSES)
    ]


@pytest.mark.skipif(not CLASSES_TSV.is_file(), reason="Tiny-ImageNet-200 classes.tsv (shared/data) not available")
def test_member_names_are_tiny_imagenet_words_of_their_index() -> None:
    words = {}
    for line in CLASSES_TSV.read_text(encoding="utf-8").splitlines()[1:]:
        index, _, synonyms = line.split("\t")
        words[int(index)] = synonyms.split(", ")
    for group in TIN_TARGET_SUPERCLASSES + TIN_NUISANCE_SUPERCLASSES:
        for index, name in group.members:
            assert name in words[index], (group.name, index, name, words[index])
