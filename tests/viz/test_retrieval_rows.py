"""Leave-one-out retrieval examples of a real model on real images, checked against brute-force cosine search, and
the multi-query grid they are drawn into."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import timm
import torch

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.index.embedding import embed_items, gallery_items, model_data_config
from gsp_hub.viz import RetrievalRow, leave_one_out_rows, plot_retrieval_rows


def test_rows_are_the_nearest_other_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("metric_net", backbone="test_resnet", pool="gsp", embed_dim=16, num_prototypes=4)
    test = load_fashion_mnist_subset()["test"].select(range(0, 1000, 25))  # 40 images, 10 classes
    rows = leave_one_out_rows(model, test, num_queries=3, k=4, seed=1, input_size=32, progress=False)

    items = gallery_items(test)
    embeddings = embed_items(model, items, model_data_config(model, 32), progress=False)
    similarity = embeddings @ embeddings.T
    queries = np.sort(np.random.default_rng(1).choice(40, size=3, replace=False))
    names = test.features["label"].names
    assert len(rows) == 3
    for row, query in zip(rows, queries, strict=True):
        others = np.delete(np.arange(40), query)
        expected = others[np.argsort(-similarity[query, others], kind="stable")[:4]]
        np.testing.assert_allclose(row.scores, similarity[query, expected], atol=1e-5)
        assert row.labels == [names[test[int(index)]["label"]] for index in expected]
        assert row.query_label == names[test[int(query)]["label"]]
        assert np.array_equal(np.asarray(row.query), np.asarray(test[int(query)]["image"].convert("RGB")))
        assert len(row.neighbours) == 4 and all(isinstance(image, PIL.Image.Image) for image in row.neighbours)

    path = plot_retrieval_rows(rows, tmp_path / "grid.png", title="three queries")
    with PIL.Image.open(path) as png:  # 3 rows of query + 4 neighbours
        assert png.format == "PNG" and png.width > 1.2 * png.height

    with pytest.raises(ValueError, match="num_queries .got 41. can be at most 40"):
        leave_one_out_rows(model, test, num_queries=41, k=4, progress=False)
    with pytest.raises(ValueError, match="k .got 40. at most 39"):
        leave_one_out_rows(model, test, num_queries=2, k=40, progress=False)


def test_plot_rows_refusals(tmp_path: Path) -> None:
    image = PIL.Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="rows is empty"):
        plot_retrieval_rows([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="same length"):
        plot_retrieval_rows([RetrievalRow(image, [image, image], [0.9])], tmp_path / "a.png")
    with pytest.raises(ValueError, match="must end in .png"):
        plot_retrieval_rows([RetrievalRow(image, [image], [0.9])], tmp_path / "a.svg")
    assert not list(tmp_path.iterdir())
