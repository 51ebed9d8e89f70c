"""Data for metric learning: load an image data set, split it by class, transform it lazily, sample m per class.

The data flow of a run::

    dataset = load_image_dataset(source)              # DatasetDict, columns image (Image) / label (ClassLabel)
    splits = zero_shot_split(dataset)                 # DatasetSplits(train, test, num_classes, ...)
    transforms = create_image_transforms(model, input_size=64)
    train = with_image_transform(splits.train, transforms.train)
    sampler = MPerClassBatchSampler(np.asarray(splits.train["label"]), m=4, batch_size=32)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate_image_batch)

``source=None`` is Fashion-Collage, the nuisance data set shipped in the package (:func:`load_fashion_collage`:
64x64 collages of one Fashion-MNIST label tile and three MNIST digits, its own train / validation / test classes,
a ``target_cell`` column); ``"fashion-mnist-subset"`` is the plain Fashion-MNIST subset it is built from
(:mod:`gsp_hub.data.embedded`). ``source`` may also be a path, a Hub id, a CSV / JSON-lines table of image paths
or a ``datasets.Dataset`` / ``DatasetDict`` object (:mod:`gsp_hub.data.loading`), or one of the four DML benchmarks
in its official layout, ``cub200:/data/CUB_200_2011`` (:mod:`gsp_hub.data.dml_benchmarks`). Nuisance benchmarks
in the GSP paper's collage style are built from Tiny-ImageNet by :func:`build_tin_collage` and
:func:`build_tin_superclass_collage` (its super-classes: :mod:`gsp_hub.data.tin_superclasses`).
"""

from gsp_hub.data.collage import (
    COLLAGE_BACKGROUND_CLASSES,
    COLLAGE_GRID,
    COLLAGE_SPLITS,
    COLLAGE_TILE_SIZE,
    CollageSplit,
    build_tin_collage,
    collage_location_cells,
)
from gsp_hub.data.dml_benchmarks import (
    DML_BENCHMARKS,
    load_cars196,
    load_cub200,
    load_dml_benchmark,
    load_inshop,
    load_stanford_online_products,
)
from gsp_hub.data.embedded import (
    DEFAULT_DATASET_NAME,
    FASHION_COLLAGE_NAME,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUBSET_NAME,
    FASHION_MNIST_SUBSET_PATH,
    load_fashion_mnist_subset,
)
from gsp_hub.data.fashion_collage import FASHION_COLLAGE_SPLITS, load_fashion_collage
from gsp_hub.data.loading import (
    EMBEDDED_DATASETS,
    IMAGE_COLUMN,
    IMAGE_COLUMN_NAMES,
    LABEL_COLUMN,
    LABEL_COLUMN_NAMES,
    SPLIT_COLUMN,
    TARGET_CELL_COLUMN,
    DatasetSource,
    check_verification_options,
    decode_image,
    find_bad_images,
    is_embedded_source,
    load_image_dataset,
    verify_dataset_images,
)
from gsp_hub.data.sampler import MPerClassBatchSampler
from gsp_hub.data.splits import (
    SPLIT_PROTOCOLS,
    DatasetSplits,
    describe_classes,
    make_splits,
    own_splits,
    zero_shot_split,
)
from gsp_hub.data.tin_superclass_collage import (
    SUPERCOLLAGE_TILE_SIZES,
    TIN_SUPERCOLLAGE_SPLITS,
    SuperCollageSplit,
    build_tin_superclass_collage,
    build_tin_superclass_collage_dict,
)
from gsp_hub.data.tin_superclasses import (
    TIN_NUISANCE_SUPERCLASSES,
    TIN_SUPERCLASS_NAMES,
    TIN_TARGET_SUPERCLASSES,
    TIN_UNUSED_CLASSES,
    TinSuperClass,
)
from gsp_hub.data.transforms import (
    BatchTransform,
    ImageConfigOptions,
    ImageTransform,
    ImageTransforms,
    collate_image_batch,
    create_image_transforms,
    resolve_image_config,
    with_image_transform,
)

__all__ = [
    "COLLAGE_BACKGROUND_CLASSES",
    "COLLAGE_GRID",
    "COLLAGE_SPLITS",
    "COLLAGE_TILE_SIZE",
    "DEFAULT_DATASET_NAME",
    "DML_BENCHMARKS",
    "EMBEDDED_DATASETS",
    "FASHION_COLLAGE_NAME",
    "FASHION_COLLAGE_SPLITS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SUBSET_NAME",
    "FASHION_MNIST_SUBSET_PATH",
    "IMAGE_COLUMN",
    "IMAGE_COLUMN_NAMES",
    "LABEL_COLUMN",
    "LABEL_COLUMN_NAMES",
    "SPLIT_COLUMN",
    "SPLIT_PROTOCOLS",
    "SUPERCOLLAGE_TILE_SIZES",
    "TIN_NUISANCE_SUPERCLASSES",
    "TIN_SUPERCLASS_NAMES",
    "TIN_SUPERCOLLAGE_SPLITS",
    "TIN_TARGET_SUPERCLASSES",
    "TIN_UNUSED_CLASSES",
    "TARGET_CELL_COLUMN",
    "BatchTransform",
    "CollageSplit",
    "DatasetSource",
    "DatasetSplits",
    "describe_classes",
    "ImageConfigOptions",
    "ImageTransform",
    "ImageTransforms",
    "MPerClassBatchSampler",
    "SuperCollageSplit",
    "TinSuperClass",
    "build_tin_collage",
    "build_tin_superclass_collage",
    "build_tin_superclass_collage_dict",
    "collage_location_cells",
    "collate_image_batch",
    "create_image_transforms",
    "check_verification_options",
    "decode_image",
    "find_bad_images",
    "is_embedded_source",
    "load_cars196",
    "load_cub200",
    "load_dml_benchmark",
    "load_fashion_collage",
    "load_fashion_mnist_subset",
    "load_image_dataset",
    "verify_dataset_images",
    "load_inshop",
    "load_stanford_online_products",
    "make_splits",
    "own_splits",
    "resolve_image_config",
    "with_image_transform",
    "zero_shot_split",
]
