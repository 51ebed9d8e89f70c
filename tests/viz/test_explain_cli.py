"""`gsp-hub explain heatmap | retrieval` end to end with exported models on real images (Fashion-MNIST PNGs,
CIFAR-10 JPEGs), and the bad-input reports that come before any work."""

from __future__ import annotations

import os
import re
from pathlib import Path

import PIL.Image
import pyarrow.parquet as pq
import pytest
import timm
import torch

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.cli import main
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.hub import save_pretrained

SHARED_DATA = Path(os.environ.get("GSP_HUB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CIFAR_TEST = SHARED_DATA / "cifar10-jpeg" / "data" / "test-00000-of-00001.parquet"


def export_model(folder: Path, pool: str) -> Path:
    torch.manual_seed(0)
    options = {"num_prototypes": 4, "gamma": 10.0} if pool == "gsp" else {}
    model = timm.create_model("metric_net", backbone="test_resnet", pool=pool, embed_dim=16, **options)
    return save_pretrained(model, folder, data_config={"input_size": (3, 64, 64)})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    test = load_fashion_mnist_subset()["test"]
    test[0]["image"].save(root / "boot.png")
    test[420]["image"].save(root / "coat.png")
    test.select(range(0, 1000, 25)).to_parquet(str(root / "fmnist.parquet"))  # 40 images, 10 classes
    export_model(root / "run" / "model", "gsp")  # a `gsp-hub train` run folder holds its model in model/
    return {"root": root, "run": root / "run", "gsp": root / "run" / "model",
            "avg": export_model(root / "avg", "avg")}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["explain", *argv]) == 0
    return capsys.readouterr().out


def fail(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["explain", *argv]) == 2
    return capsys.readouterr().err


def test_heatmap_of_png_and_jpeg_images(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    images = [workspace["root"] / "boot.png", workspace["root"] / "coat.png"]
    if CIFAR_TEST.is_file():
        rows = next(pq.ParquetFile(CIFAR_TEST).iter_batches(batch_size=2, columns=["image"])).to_pylist()
        for number, row in enumerate(rows):
            (workspace["root"] / f"cifar{number}.jpg").write_bytes(row["image"]["bytes"])
            images.append(workspace["root"] / f"cifar{number}.jpg")
    out = workspace["root"] / "maps"
    text = run(capsys, "heatmap", "--model", str(workspace["run"]), "--image", *map(str, images), "--out", str(out))

    written = sorted(out.iterdir())
    assert [path.name for path in written] == sorted(f"{image.stem}_transport.png" for image in images)
    for image, path in zip(sorted(images, key=lambda image: image.stem), written, strict=True):
        assert f"{image} -> {path}" in text
        with PIL.Image.open(path) as png:
            assert png.format == "PNG" and png.size == (1050, 390)

    text = run(capsys, "heatmap", "--model", f"local-dir:{workspace['gsp']}", "--image", str(images[0]), str(images[0]),
               "--out", str(out / "again"), "--img-size", "96")
    assert sorted(path.name for path in (out / "again").iterdir()) == ["00_boot_transport.png", "01_boot_transport.png"]


def test_retrieval_grid_of_a_dataset(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    grid = workspace["root"] / "figures" / "retrieval.png"
    dataset = workspace["root"] / "fmnist.parquet"
    text = run(capsys, "retrieval", "--model", str(workspace["gsp"]), "--dataset", str(dataset), "--num-queries", "3",
               "-k", "4", "--out", str(grid), "--no-progress")
    found = re.fullmatch(r"3 queries of (\S+) \(test split, (\d+) images\), top-4: (\d+)/12 hits \(.*%\) -> (\S+)\n",
                         text)
    assert found and found[1] == str(dataset) and found[4] == str(grid)
    assert 5 <= int(found[2]) < 40 and int(found[3]) <= 12  # zero-shot test side: half of the 10 classes
    with PIL.Image.open(grid) as png:  # 3 rows of query + 4 neighbours
        assert png.format == "PNG" and png.width > 1.2 * png.height


def test_bad_input_is_reported_before_any_work(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = workspace["root"]
    err = fail(capsys, "heatmap", "--model", str(workspace["avg"]), "--image", str(root / "boot.png"), "--out",
               str(root / "avg_maps"))
    assert f"--model {workspace['avg']}" in err and "pools with 'avg'" in err and "--pool gsp" in err
    assert not (root / "avg_maps").exists()

    missing = root / "missing.jpg"
    err = fail(capsys, "heatmap", "--model", str(root / "no-such-model"), "--image", str(missing))
    assert f"--image {missing}: no such file" in err  # found before the (missing) model is looked at

    err = fail(capsys, "heatmap", "--model", str(workspace["gsp"]), "--image", str(root / "boot.png"), "--out",
               str(root / "boot.png"))
    assert "is a file; --out is the folder" in err

    err = fail(capsys, "retrieval", "--model", str(root / "no-such-model"), "--out", str(root / "grid.jpg"))
    assert "--out must end in .png, got 'grid.jpg'" in err

    err = fail(capsys, "retrieval", "--model", str(workspace["gsp"]), "--dataset", str(root / "fmnist.parquet"),
               "--num-queries", "40", "--out", str(root / "grid.png"))
    assert re.search(r"the test split has \d+ images: --num-queries \(got 40\) can be at most \d+", err)

    err = fail(capsys, "retrieval", "--model", str(root / "no-such-model"), "--out", str(root / "grid.png"), "-k", "0")
    assert "--k must be >= 1, got 0" in err
    assert not (root / "grid.png").exists()
