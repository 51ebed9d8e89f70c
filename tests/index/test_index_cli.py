"""`gsp-hub index build | search` end to end with an exported model: JSON output, retrieval grid, --append,
data set sources, and the refusals (existing / foreign / corrupt index, another model)."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
import timm
import torch

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.cli import main
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.hub import save_pretrained
from gsp_hub.index import GalleryIndex
from gsp_hub.index.gallery import EMBEDDINGS_FILE

IMAGE_SIZE = 64


def export_model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model("metric_net", backbone="test_resnet", pool="gsp", embed_dim=16, num_prototypes=4)
    return save_pretrained(model, folder, data_config={"input_size": (3, IMAGE_SIZE, IMAGE_SIZE)})


def write_images(root: Path, rows: range) -> None:
    test = load_fashion_mnist_subset()["test"]
    names = test.features["label"].names
    for row in rows:
        example = test[row]
        folder = root / names[example["label"]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        example["image"].save(folder / f"{row:04d}.png")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    write_images(root / "gallery", range(30))
    write_images(root / "more", range(30, 42))
    return {
        "root": root,
        "model": export_model(root / "model", seed=0),
        "other_model": export_model(root / "other_model", seed=1),
        "gallery": root / "gallery",
        "more": root / "more",
    }


def test_build_search_append(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    index = workspace["root"] / "gallery.index"
    summary = json.loads(run(capsys, "index", "build", "--model", str(workspace["model"]), "--images",
                             str(workspace["gallery"]), "--out", str(index), "--no-progress", "--json"))
    assert summary["count"] == 30 and summary["kind"] == "flat" and summary["recall_vs_exact"] is None
    assert summary["model_id"] == str(workspace["model"])

    query = sorted(workspace["gallery"].rglob("*.png"))[7]
    grid = workspace["root"] / "grid.png"
    result = json.loads(run(capsys, "index", "search", "--index", str(index), "--query", str(query), "-k", "4",
                            "--grid", str(grid), "--json"))
    neighbours = result["neighbours"]
    assert [n["rank"] for n in neighbours] == [1, 2, 3, 4]
    assert neighbours[0]["path"] == str(query) and neighbours[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert neighbours[0]["label"] == query.parent.name
    assert all(a["score"] >= b["score"] for a, b in zip(neighbours, neighbours[1:], strict=False))
    with PIL.Image.open(grid) as image:  # query + 4 neighbours in one row
        assert image.format == "PNG" and image.width > 4 * image.height

    text = run(capsys, "index", "search", "--index", str(index), "--query", str(query), "-k", "2", "--no-grid")
    assert "top-2 neighbours" in text and str(query) in text and "retrieval grid" not in text

    out = run(capsys, "index", "build", "--model", str(workspace["model"]), "--images", str(workspace["more"]),
              "--out", str(index), "--append", "--no-progress")
    assert "indexed 12 images (42 in total" in out
    appended = GalleryIndex.load(index)
    assert len(appended) == 42 and [item.path for item in appended.items[:30]] == sorted(
        str(path) for path in workspace["gallery"].rglob("*.png")
    )


def test_approximate_build_prints_its_recall(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "index", "build", "--model", str(workspace["model"]), "--images", str(workspace["gallery"]),
              "--out", str(workspace["root"] / "hnsw.index"), "--kind", "hnsw", "--no-progress")
    assert "hnsw: approximate, recall@10 vs exact = " in out


def test_dataset_source_with_split(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    parquet = workspace["root"] / "fmnist.parquet"
    load_fashion_mnist_subset()["test"].select(range(16)).to_parquet(str(parquet))
    index = workspace["root"] / "dataset.index"
    run(capsys, "index", "build", "--model", str(workspace["model"]), "--images", str(parquet), "--split", "train",
        "--out", str(index), "--no-progress")
    loaded = GalleryIndex.load(index)
    assert [(item.dataset, item.split, item.row) for item in loaded.items] == [
        (str(parquet), "train", row) for row in range(16)
    ]
    query = workspace["root"] / "query.png"
    load_fashion_mnist_subset()["test"][3]["image"].save(query)
    grid = workspace["root"] / "dataset_grid.png"
    result = json.loads(run(capsys, "index", "search", "--index", str(index), "--query", str(query), "-k", "3",
                            "--grid", str(grid), "--json"))
    assert result["neighbours"][0]["row"] == 3 and grid.is_file()


def test_refusals_leave_every_folder_untouched(workspace: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "gallery.index"
    assert main(["index", "build", "--model", str(workspace["model"]), "--images", str(workspace["more"]),
                 "--out", str(index), "--no-progress"]) == 0
    snapshot = {path.name: path.read_bytes() for path in index.iterdir()}
    # --debug: a refusal propagates as its exception (without it: one line on stderr and exit code 2)
    build = ["--debug", "index", "build", "--images", str(workspace["gallery"]), "--out", str(index), "--no-progress"]
    with pytest.raises(FileExistsError, match="pass --append"):
        main([*build, "--model", str(workspace["model"])])
    with pytest.raises(ValueError, match="differs from the one that built this index"):
        main([*build, "--model", str(workspace["other_model"]), "--append"])
    with pytest.raises(ValueError, match="appending keeps the index's structure"):
        main([*build, "--model", str(workspace["model"]), "--append", "--kind", "ivf"])
    assert {path.name: path.read_bytes() for path in index.iterdir()} == snapshot

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"my photo")
    with pytest.raises(ValueError, match="refusing to replace it"):
        main(["--debug", "index", "build", "--model", str(workspace["model"]), "--images",
              str(workspace["more"]), "--out", str(foreign), "--overwrite", "--no-progress"])
    assert [path.name for path in foreign.iterdir()] == ["holiday.jpg"]

    data = bytearray((index / EMBEDDINGS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (index / EMBEDDINGS_FILE).write_bytes(bytes(data))
    corrupted = {path.name: path.read_bytes() for path in index.iterdir()}
    with pytest.raises(ValueError, match="is corrupt"):
        main([*build, "--model", str(workspace["model"]), "--append"])
    with pytest.raises(ValueError, match="is corrupt"):
        main(["--debug", "index", "search", "--index", str(index), "--query",
              str(next(workspace["more"].rglob("*.png")))])
    assert {path.name: path.read_bytes() for path in index.iterdir()} == corrupted


def test_search_with_another_model_is_refused(workspace: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "gallery.index"
    main(["index", "build", "--model", str(workspace["model"]), "--images", str(workspace["more"]), "--out",
          str(index), "--no-progress"])
    query = next(workspace["more"].rglob("*.png"))
    with pytest.raises(ValueError, match="differs from the one that built this index"):
        main(["--debug", "index", "search", "--index", str(index), "--query", str(query), "--model",
              str(workspace["other_model"]), "--no-grid"])
    with pytest.raises(FileNotFoundError, match="is not an image file"):
        main(["--debug", "index", "search", "--index", str(index), "--query", str(tmp_path / "missing.jpg")])
