"""GalleryIndex: round trip vs brute force, data set sources, append == rebuild, approximate recall, model checks,
corrupt / foreign folders and atomic saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import timm
import torch
import torch.nn.functional as F

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.index import GalleryIndex, IndexSettings, recall_vs_exact
from gsp_hub.index.gallery import EMBEDDINGS_FILE, HEADER_FILE, METADATA_FILE

IMAGE_SIZE = 64


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("metric_net", backbone="test_resnet", pool="gsp", embed_dim=16, num_prototypes=4).eval()


def write_images(root: Path, rows: range) -> list[Path]:
    """Real Fashion-MNIST test images as root/<label>/<row>.png."""
    test = load_fashion_mnist_subset()["test"]
    files = []
    for row in rows:
        example = test[row]
        folder = root / str(example["label"])
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / f"{row:04d}.png")
        example["image"].save(files[-1])
    return files


def brute_force_embeddings(model: torch.nn.Module, files: list[Path], data_config: dict) -> np.ndarray:
    """One image at a time, straight from timm's transform and the model: the reference embeddings."""
    transform = timm.data.create_transform(**data_config, is_training=False)
    rows = []
    with torch.no_grad():
        for file in files:
            image = transform(PIL.Image.open(file).convert("RGB"))[None]
            rows.append(F.normalize(model.forward_head(model.forward_features(image), pre_logits=True), dim=1))
    return torch.cat(rows).numpy()


def assert_same_neighbours(scores: np.ndarray, ids: np.ndarray, reference: np.ndarray, queries: np.ndarray) -> None:
    """faiss results equal a numpy brute-force top-k (ids compared where the reference scores are not tied)."""
    similarities = queries @ reference.T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, : ids.shape[1]]
    expected = np.take_along_axis(similarities, order, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    gaps = np.abs(np.diff(np.concatenate([expected, expected[:, -1:] - 1], axis=1), axis=1))
    untied = (gaps > 1e-5) & np.concatenate([np.ones_like(gaps[:, :1], bool), gaps[:, :-1] > 1e-5], axis=1)
    assert untied.mean() > 0.5
    np.testing.assert_array_equal(ids[untied], order[untied])


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("gallery") / "all"
    return root, write_images(root, range(24))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def built(gallery, model, tmp_path_factory: pytest.TempPathFactory) -> tuple[GalleryIndex, Path]:
    root, _ = gallery
    index = GalleryIndex.build(model, root, model_id="tests/model", input_size=IMAGE_SIZE, batch_size=16,
                               progress=False)
    return index, index.save(tmp_path_factory.mktemp("indexes") / "gallery.index")


def test_round_trip_search_equals_brute_force(built, gallery, model) -> None:
    index, folder = built
    root, files = gallery
    loaded = GalleryIndex.load(folder)
    ordered_files = sorted(files)  # the index lists a folder in sorted path order
    assert [Path(item.path) for item in loaded.items] == ordered_files
    assert [item.label for item in loaded.items] == [file.parent.name for file in ordered_files]
    assert loaded.model_id == "tests/model" and loaded.config_hash == index.config_hash
    reference = brute_force_embeddings(model, ordered_files, loaded.data_config)
    np.testing.assert_allclose(loaded.embeddings, reference, atol=1e-5)
    scores, ids = loaded.search(reference[::3], k=8)
    assert_same_neighbours(scores, ids, reference, reference[::3])
    query = PIL.Image.open(ordered_files[5])
    (hits,) = loaded.search_images(model, [query], k=3)
    assert hits[0].id == 5 and hits[0].path == str(ordered_files[5]) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [hit.rank for hit in hits] == [1, 2, 3]


def test_dataset_source_records_rows_and_label_names(model) -> None:
    test = load_fashion_mnist_subset()["test"].select(range(12))
    index = GalleryIndex.build(model, test, dataset_name="fashion-mnist-subset", split="test",
                               input_size=IMAGE_SIZE, progress=False)
    names = test.features["label"].names
    assert [(item.dataset, item.split, item.row) for item in index.items] == [
        ("fashion-mnist-subset", "test", row) for row in range(12)
    ]
    assert [item.label for item in index.items] == [names[label] for label in test["label"]]
    assert all(item.path is None for item in index.items)


def test_append_equals_full_rebuild(gallery, model, built, tmp_path: Path) -> None:
    full, _ = built
    root, _ = gallery
    first, second = tmp_path / "first", tmp_path / "second"
    for label_dir in sorted(root.iterdir()):  # classes 0-4 first, the rest appended: the same order as the full build
        target = first if int(label_dir.name) < 5 else second
        (target / label_dir.name).mkdir(parents=True)
        for file in label_dir.iterdir():
            (target / label_dir.name / file.name).write_bytes(file.read_bytes())
    partial = GalleryIndex.build(model, first, model_id="tests/model", input_size=IMAGE_SIZE, progress=False)
    folder = partial.save(tmp_path / "appended.index")
    reloaded = GalleryIndex.load(folder)
    added = reloaded.append(model, second, batch_size=7, progress=False)
    reloaded.save(folder, overwrite=True)
    appended = GalleryIndex.load(folder)
    assert added == len(full) - len(partial) and len(appended) == len(full)
    np.testing.assert_allclose(appended.embeddings, full.embeddings, atol=1e-5)
    assert [(Path(item.path).name, item.label) for item in appended.items] == [
        (Path(item.path).name, item.label) for item in full.items
    ]
    queries = full.embeddings[::3]
    np.testing.assert_array_equal(appended.search(queries, k=5)[1], full.search(queries, k=5)[1])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_reports_its_measured_recall(kind: str, tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    centres = generator.normal(size=(20, 32))
    points = centres[generator.integers(0, 20, size=4000)] + 0.5 * generator.normal(size=(4000, 32))
    embeddings = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    settings = IndexSettings(kind=kind, hnsw_m=8, ef_search=16, nprobe=2)
    index = GalleryIndex.from_embeddings(embeddings, settings=settings)
    queries = embeddings[np.sort(generator.choice(4000, size=1000, replace=False))]
    assert index.recall["k"] == 10 and index.recall["queries"] == 1000
    # an independent brute-force recall on other queries lands close to the stored figure, and below exact search
    exact_order = np.argsort(-(queries @ embeddings.T), axis=1)[:, :10]
    found = index.search(queries, k=10)[1]
    brute_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_order, found, strict=True)])
    assert brute_recall == pytest.approx(recall_vs_exact(index.structure, embeddings, queries), abs=1e-9)
    assert 0.3 < brute_recall < 1.0 and abs(brute_recall - index.recall["recall"]) < 0.1
    loaded = GalleryIndex.load(index.save(tmp_path / f"{kind}.index"))
    assert loaded.recall == index.recall and loaded.settings == settings
    np.testing.assert_array_equal(loaded.search(queries, k=10)[1], found)


def test_refuses_embeddings_of_another_model(built, gallery) -> None:
    _, folder = built
    root, files = gallery
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    index = GalleryIndex.load(folder)
    other = make_model(seed=1)
    with pytest.raises(ValueError, match="differs from the one that built this index"):
        index.append(other, root, progress=False)
    with pytest.raises(ValueError, match="differs from the one that built this index"):
        index.search_images(other, [PIL.Image.open(files[0])])
    other_gamma = make_model()
    other_gamma.pool.gamma = 2.0  # same weights, another hyperparameter: other embeddings
    with pytest.raises(ValueError, match="differs from the one that built this index"):
        index.check_model(other_gamma)
    assert len(index) == 24 and {path.name: path.read_bytes() for path in folder.iterdir()} == before


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_corrupt_or_foreign_folders_give_clear_errors(built, tmp_path: Path) -> None:
    _, folder = built
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GalleryIndex.load(tmp_path / "missing")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"my photo")
    with pytest.raises(ValueError, match="is not a gsp_hub gallery index: it has no index.json"):
        GalleryIndex.load(foreign)
    corrupt = copy_folder(folder, tmp_path / "corrupt")
    data = bytearray((corrupt / EMBEDDINGS_FILE).read_bytes())
    data[-3] ^= 0xFF
    (corrupt / EMBEDDINGS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupt: embeddings.npy does not match the checksum"):
        GalleryIndex.load(corrupt)
    truncated = copy_folder(folder, tmp_path / "truncated")
    (truncated / METADATA_FILE).unlink()
    with pytest.raises(ValueError, match="is incomplete: metadata.parquet is missing"):
        GalleryIndex.load(truncated)
    broken = copy_folder(folder, tmp_path / "broken")
    (broken / HEADER_FILE).write_text('{"format": "gsp_hub.gallery_index", "format_versi')
    with pytest.raises(ValueError, match="index.json is corrupt"):
        GalleryIndex.load(broken)
    other_tool = copy_folder(folder, tmp_path / "other_tool")
    (other_tool / HEADER_FILE).write_text('{"format": "another.vector_store", "version": 3}')
    with pytest.raises(ValueError, match="is not a gsp_hub gallery index"):
        GalleryIndex.load(other_tool)


def test_save_never_replaces_a_foreign_folder_or_half_writes(built, tmp_path: Path, monkeypatch) -> None:
    index, folder = built
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"my photo")
    with pytest.raises(ValueError, match="exists and is not a gsp_hub gallery index; refusing to replace it"):
        index.save(foreign, overwrite=True)
    assert [path.name for path in foreign.iterdir()] == ["holiday.jpg"]
    target = index.save(tmp_path / "gallery.index")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        index.save(target)
    before = {path.name: path.read_bytes() for path in target.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gsp_hub.index.gallery.pq.write_table", disk_full)  # fails after embeddings.npy is written
    with pytest.raises(OSError, match="No space left"):
        index.save(target, overwrite=True)
    assert {path.name: path.read_bytes() for path in target.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gallery.index", "photos"]  # no temp folder left
    monkeypatch.undo()
    assert len(GalleryIndex.load(target)) == len(index)
