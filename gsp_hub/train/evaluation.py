"""Evaluation passes shared by the tasks, the callbacks and the commands: embed a split (whole, or one gathered batch
at a time for :mod:`gsp_hub.train.disk_embeddings`), predict classes.

They run the network over sequential ``(images, labels)`` batches of a prepared loader in eval mode, without
gradients, and gather the results from every process (``accelerator.gather_for_metrics`` drops the padding of the
last batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gsp_hub.metrics import retrieval_metrics

__all__ = ["embed_split", "gather_outputs", "gathered_batches", "predict", "retrieval_evaluation",
           "split_retrieval_metrics"]


@torch.no_grad()
def gathered_batches(network: nn.Module, loader: DataLoader, accelerator: Accelerator, *, count: int = 1,
                     channels_last: bool = False, description: str = "embed") -> Iterator[tuple[list[Tensor], Tensor]]:
    """The first ``count`` outputs of ``network`` over a prepared evaluation loader, one gathered batch at a time:
    the network returns a tensor (B, ...) or a tuple starting with ``count`` tensors. Yields, per batch, each output
    gathered from every process, (P * B, ...) float32 on the CPU (the last batch without accelerate's padding when the
    loader knows its length), and the labels (P * B,)."""
    network.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, batch_labels in tqdm(loader, desc=description, leave=False,
                                     disable=not accelerator.is_local_main_process):
        output = network(images.to(memory_format=memory_format))
        wanted = (output if isinstance(output, tuple) else (output,))[:count]
        *wanted, batch_labels = accelerator.gather_for_metrics((*(value.float() for value in wanted), batch_labels))
        yield [value.cpu() for value in wanted], batch_labels.cpu()


def gather_outputs(network: nn.Module, loader: DataLoader, accelerator: Accelerator, *, count: int = 1,
                   channels_last: bool = False, description: str = "embed") -> tuple[list[Tensor], Tensor]:
    """The first ``count`` outputs of ``network`` over a prepared evaluation loader, gathered from every process
    (:func:`gathered_batches`). Returns each output for the whole split, (N, ...) float32, and the labels (N,)."""
    outputs: list[list[Tensor]] = [[] for _ in range(count)]
    labels = []
    for wanted, batch_labels in gathered_batches(network, loader, accelerator, count=count,
                                                 channels_last=channels_last, description=description):
        for column, value in zip(outputs, wanted, strict=True):
            column.append(value)
        labels.append(batch_labels)
    return [torch.cat(column) for column in outputs], torch.cat(labels)


def embed_split(network: nn.Module, loader: DataLoader, accelerator: Accelerator,
                *, channels_last: bool = False, description: str = "embed") -> tuple[Tensor, Tensor]:
    """Embeddings (N, D) and labels (N,) of a prepared evaluation loader, gathered from every process; the network
    returns embeddings (B, D) or a tuple starting with them."""
    (embeddings,), labels = gather_outputs(network, loader, accelerator, channels_last=channels_last,
                                           description=description)
    return embeddings, labels


def split_retrieval_metrics(embeddings: Tensor | np.ndarray, labels: Tensor | np.ndarray, num_queries: int = 0,
                            *, bf16_screening: bool | None = None) -> dict[str, float]:
    """Retrieval metrics (cosine) of a split's embeddings (N, D) and labels (N,): leave-one-out with
    ``num_queries=0``, else the first ``num_queries`` rows query the others, their gallery (In-shop protocol).
    Memory maps (:func:`~gsp_hub.train.disk_embeddings.embed_split_to_disk`) take ``bf16_screening=False``
    (:func:`~gsp_hub.metrics.retrieval_metrics`); their row slices stay memory maps."""
    if not num_queries:
        return retrieval_metrics(embeddings, labels, bf16_screening=bf16_screening)
    return retrieval_metrics(embeddings[num_queries:], labels[num_queries:],
                             query_embeddings=embeddings[:num_queries], query_labels=labels[:num_queries],
                             bf16_screening=bf16_screening)


def retrieval_evaluation(network: nn.Module, loader: DataLoader, accelerator: Accelerator,
                         *, channels_last: bool = False, num_queries: int = 0) -> dict[str, float]:
    """Retrieval metrics of an evaluation split (:func:`split_retrieval_metrics`); leaves every RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        embeddings, labels = embed_split(network, loader, accelerator, channels_last=channels_last)
    return split_retrieval_metrics(embeddings, labels, num_queries)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Any | None = None) -> tuple[Tensor, Tensor]:
    """Predicted classes (N,) and the loader's labels (N,) of a model over ``(images, labels)`` batches (gathered
    over processes when ``accelerator`` is given); only the images go through the model."""
    model.eval()
    predictions, labels = [], []
    for images, batch_labels in loader:
        batch_predictions = model(images).argmax(1)
        if accelerator is not None:
            batch_predictions, batch_labels = accelerator.gather_for_metrics((batch_predictions, batch_labels))
        predictions.append(batch_predictions.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(predictions), torch.cat(labels)
