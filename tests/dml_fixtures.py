"""Tiny copies of the four DML benchmarks in their official on-disk layouts (imported by the tests).

Each writer makes a folder as the release unpacks it, with the exact list-file formats (for Cars196 a ``.mat`` in
the devkit's struct layout, written with ``scipy.io.savemat``) and a few random 8x8 PNG images per class, and returns
the folder. The class ids are official ones, so that the loaders split them as the real data: the training classes
outnumber the test classes by one in SOP and In-shop (the zero-shot half is then not C // 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 3: "003.Sooty_Albatross",
               4: "004.Groove_billed_Ani", 101: "101.White_Pelican", 102: "102.Western_Wood_Pewee",
               103: "103.Sayornis", 104: "104.American_Pipit"}
CARS_CLASSES = (1, 2, 3, 4, 99, 100, 101, 102)  # of the 196 names in class_names
SOP_TRAIN_CLASSES, SOP_TEST_CLASSES = (1, 2, 3, 4, 5), (11_319, 11_320, 11_321, 11_322)
INSHOP_TRAIN_ITEMS = ("id_00000001", "id_00000003", "id_00000004", "id_00000008")
INSHOP_TEST_ITEMS = ("id_00000002", "id_00000005", "id_00000007")  # each: 1 query image, the others gallery
IMAGES_PER_CLASS = 3


def write_png(path: Path, seed: int) -> str:
    """A random 8x8 RGB PNG at ``path`` (folders created); returns the path as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path, format="PNG")
    return str(path)


def write_cub200(root: Path, *, images_per_class: int = IMAGES_PER_CLASS) -> Path:
    """``root/CUB_200_2011`` with images.txt, image_class_labels.txt, classes.txt, images/ (by default 24 images, 8
    classes)."""
    folder = root / "CUB_200_2011"
    images, labels = [], []
    for class_id, name in CUB_CLASSES.items():
        for i in range(images_per_class):
            image_id = len(images) + 1
            relative = f"{name}/{name.split('.')[1]}_{image_id:04d}_{i}.png"
            write_png(folder / "images" / relative, image_id)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text("".join(f"{c} {name}\n" for c, name in CUB_CLASSES.items()))
    return folder


def cars_class_name(class_id: int) -> str:
    return f"Make Model {class_id} Sedan 2012"


def write_cars196(root: Path, *, images_per_class: int = IMAGES_PER_CLASS) -> Path:
    """``root/cars196`` with the devkit's cars_annos.mat (a 1xN struct array ``annotations`` with relative_im_path,
    bbox_x1..bbox_y2, class, test; a 1x196 cell array ``class_names``) and car_ims/ (by default 24 images, 8
    classes)."""
    from scipy.io import savemat

    folder = root / "cars196"
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    rows = [(class_id, i) for class_id in CARS_CLASSES for i in range(images_per_class)]
    annotations = np.empty((1, len(rows)), dtype=[(name, "O") for name in fields])
    for index, (class_id, i) in enumerate(rows):
        relative = f"car_ims/{index + 1:06d}.png"
        write_png(folder / relative, index)
        annotations[0, index] = (np.array([relative]), *(np.array([[value]], dtype=np.uint16) for value in
                                 (1, 2, 7, 7)), np.array([[class_id]], dtype=np.uint8), np.array([[i % 2]], np.uint8))
    class_names = np.empty((1, 196), dtype=object)
    for class_id in range(1, 197):
        class_names[0, class_id - 1] = np.array([cars_class_name(class_id)])
    savemat(folder / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return folder


def write_sop(root: Path, *, images_per_class: int = IMAGES_PER_CLASS) -> Path:
    """``root/Stanford_Online_Products`` with Ebay_train.txt, Ebay_test.txt, <category>_final/ (by default 27
    images)."""
    folder = root / "Stanford_Online_Products"
    image_id = 0
    for split, classes in (("train", SOP_TRAIN_CLASSES), ("test", SOP_TEST_CLASSES)):
        lines = ["image_id class_id super_class_id path"]
        for class_id in classes:
            super_class, category = (1, "bicycle") if class_id % 2 else (2, "cabinet")
            for i in range(images_per_class):
                image_id += 1
                relative = f"{category}_final/{111085122870 + class_id}_{i}.png"
                write_png(folder / relative, image_id)
                lines.append(f"{image_id} {class_id} {super_class} {relative}")
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_inshop(root: Path, *, flat: bool = False, images_per_item: int = IMAGES_PER_CLASS) -> Path:
    """``root/inshop`` as released: Eval/list_eval_partition.txt (count line, header, rows) and Img/img/...;
    ``flat``: the list file and img/ in the folder itself (PML's layout). By default 12 train, 3 query and 6 gallery
    images (``images_per_item`` per item: a test item has 1 query image, the others are in the gallery)."""
    folder = root / "inshop"
    statuses = {item: ["train"] * images_per_item for item in INSHOP_TRAIN_ITEMS}
    statuses.update({item: ["query"] + ["gallery"] * (images_per_item - 1) for item in INSHOP_TEST_ITEMS})
    rows = []
    for item in sorted(statuses):  # the official file lists the items in id order
        for i, status in enumerate(statuses[item]):
            relative = f"img/WOMEN/Dresses/{item}/{i + 1:02d}_1_front.png"
            write_png(folder / ("" if flat else "Img") / relative, len(rows))
            rows.append(f"{relative} {item} {status}")
    list_file = folder / ("" if flat else "Eval") / "list_eval_partition.txt"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text(f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
    return folder
