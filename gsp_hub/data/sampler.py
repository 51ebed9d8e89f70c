"""m-per-class batch sampler that is correct under data-parallel training.

Every batch holds ``m`` images of each of ``batch_size // m`` distinct classes. The batches of one epoch are built
from ``(seed, epoch)`` with a private ``numpy.random.Generator`` (never the global RNG), identically on every
rank; rank ``r`` of ``W`` takes batches ``r, r + W, r + 2W, ...``, so the ranks see disjoint batches and the
same number of them, whatever their RNG state.

Usage with accelerate (verified with accelerate 1.15, two gloo processes): give the sampler the process grid
and do NOT pass the training DataLoader to ``accelerator.prepare`` (that would shard it a second time)::

    sampler = MPerClassBatchSampler(np.asarray(train["label"]), m=4, batch_size=32,
                                    num_replicas=accelerator.num_processes, rank=accelerator.process_index, seed=0)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate_image_batch, num_workers=2)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            images, labels = images.to(accelerator.device), labels.to(accelerator.device)

``batch_size`` is per process: a step sees ``batch_size * num_replicas`` images in all. To resume inside an
epoch, call ``set_epoch(epoch)`` and wrap the loader with ``accelerate.skip_first_batches(loader, k)``, which
skips index lists without loading images.

Also verified: an unsharded sampler (``num_replicas=1``) in a loader passed to ``accelerator.prepare``.
accelerate's ``BatchSamplerShard`` then gives rank r the batches r, r + W, ... of the sampler's list (the same
disjoint split; a last incomplete round is dropped, see ``drop_last``), but it does not forward ``set_epoch``
to this sampler: call ``sampler.set_epoch(epoch)`` on the object you built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["MPerClassBatchSampler"]


class MPerClassBatchSampler(Sampler[list[int]]):
    """Batches of ``m`` indices from each of ``batch_size // m`` classes; disjoint across ranks, deterministic.

    Args:
        labels: (N,) integer class label of every dataset row.
        m: images per class in a batch.
        batch_size: indices per batch (per process); a multiple of ``m``.
        num_replicas: number of processes sharing the epoch (``accelerator.num_processes``).
        rank: this process (``accelerator.process_index``).
        seed: with the epoch, fixes every batch; must be the same on every rank.
        length: images per epoch over all processes (default N). Each process yields
            ``length // (batch_size * num_replicas)`` batches.

    Sampling: each batch draws ``batch_size // m`` distinct classes uniformly at random. Within a class,
    indices are dealt from a shuffled permutation, ``m`` at a time, reshuffling when fewer than ``m`` remain,
    so an image repeats only after the other images of its class were dealt. A class with fewer than ``m``
    images is sampled with replacement: its shuffled images are cycled to fill the ``m`` slots.
    """

    drop_last = True  # batches are always full; tells accelerate's BatchSamplerShard not to pad a last round

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        m: int,
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer sequence; got shape {labels.shape} dtype {labels.dtype}")
        for name, value in (("m", m), ("batch_size", batch_size), ("num_replicas", num_replicas)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if batch_size % m:
            raise ValueError(f"batch_size={batch_size} must be a multiple of m={m} (m images per class per batch)")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}); got {rank!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed!r}")
        classes, class_of_row = np.unique(labels, return_inverse=True)
        self.classes_per_batch = batch_size // m
        if len(classes) < self.classes_per_batch:
            raise ValueError(f"batch_size={batch_size} with m={m} needs {self.classes_per_batch} classes per batch, "
                             f"but the labels have only {len(classes)}; lower batch_size or raise m")
        length = len(labels) if length is None else length
        self.num_batches = length // (batch_size * num_replicas)
        if self.num_batches < 1:
            raise ValueError(f"length={length} images per epoch is fewer than one batch per process "
                             f"(batch_size={batch_size} x num_replicas={num_replicas}); raise length")
        rows_by_class = np.argsort(class_of_row, kind="stable")
        self.class_indices = np.split(rows_by_class, np.cumsum(np.bincount(class_of_row))[:-1])
        self.m, self.batch_size = m, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (call it with the same value on every rank)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int; got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per process and epoch."""
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()

    def epoch_batches(self) -> np.ndarray:
        """All ranks' batches of the current epoch, (num_batches * num_replicas, batch_size) dataset indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        dealers = [_ClassDealer(indices, rng) for indices in self.class_indices]
        batches = np.empty((self.num_batches * self.num_replicas, self.batch_size), dtype=np.int64)
        for batch in batches:
            chosen = rng.choice(len(dealers), size=self.classes_per_batch, replace=False)
            batch[:] = np.concatenate([dealers[c].deal(self.m) for c in chosen])
        return batches


class _ClassDealer:
    """Deals the row indices of one class from successive shuffled permutations."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        self.indices, self.rng = indices, rng
        self.deck = indices[:0]

    def deal(self, m: int) -> np.ndarray:
        if len(self.indices) < m:  # too few images: cycle a shuffle of all of them (with replacement)
            return np.resize(self.rng.permutation(self.indices), m)
        if len(self.deck) < m:
            self.deck = self.rng.permutation(self.indices)
        hand, self.deck = self.deck[:m], self.deck[m:]
        return hand
