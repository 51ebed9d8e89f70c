"""Training callbacks: small stateful objects the engine (:mod:`gsp_hub.train.engine`) calls around every step.

Add behaviour without editing the loop: ``Trainer(task, callbacks=[MyCallback()])`` or
``gsp_hub.train.train(config, callbacks=[...])``. A callback sees every training batch's outputs over all processes
(:class:`BatchOutputs`), so every rank takes the same decision from the same data; returning True from
:meth:`Callback.on_train_batch` or :meth:`Callback.on_evaluate` stops the run (after that step: the run is
evaluated, checkpointed and its summary written as at a normal end). A callback is checkpointed with the run
(``state_dict`` / ``load_state_dict``: tensors to safetensors, other values to JSON; no pickle).

The tasks add their own: :class:`PrototypeInitCallback` (GSP's prototype warm-up) and the CCP projection schedule
(:mod:`gsp_hub.train.ccp_callback`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gsp_hub.layers.ops import unit_ball

__all__ = ["BatchOutputs", "Callback", "PrototypeInitCallback", "needs_prototype_init"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutputs:
    """One training batch, detached: the network's outputs (metric learning: embeddings (B, D) over all processes;
    distillation: this process's logits (B, C)), labels (B,), prototype attributes (B, K) or None, the optimizer
    step it belongs to and the batch's loss."""

    step: int
    embeddings: Tensor
    labels: Tensor
    attributes: Tensor | None
    loss: float | None = None


class Callback:
    """Base class: override the hooks you need; keep all state in ``state_dict`` for exact resume."""

    def on_train_start(self) -> None:
        """Called once by ``Trainer.run`` before training (also when resuming: check your restored state)."""

    def loss_penalty(self) -> Tensor | None:
        """A scalar added to the loss of every training micro-batch before the backward pass, or None."""
        return None

    def on_train_batch(self, outputs: BatchOutputs) -> bool | None:
        """Called after the backward pass (and the optimizer step, if any) of every training micro-batch; True stops
        the run after this batch.

        Parameters may be written in place here: autograd no longer needs their values.
        """
        return None

    def on_evaluate(self, metrics: dict[str, float], step: int) -> bool | None:
        """Called after every evaluation at optimizer step ``step`` with the validation split's metrics (empty
        without a validation split; the same gathered values on every process); True stops the run."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def needs_prototype_init(pool: nn.Module) -> bool:
    """True for pools with a prototype warm-up (``init_prototypes_``, ``initialized`` and ``memory_size``, e.g. GSP)."""
    return all(hasattr(pool, name) for name in ("init_prototypes_", "initialized", "memory_size"))


class PrototypeInitCallback(Callback):
    """GSP warm-up (shared/spec/gsp.md §6): initialise the prototypes once ``pool.memory_size`` pooled embeddings
    have been seen.

    With ``pool.init == 'memory_kcenter'`` (the default; the TF layer) every batch's pooled embeddings (gathered over
    all processes, stop-gradient, projected into the unit ball) are appended to a memory; once it holds
    ``pool.memory_size`` rows, ``pool.init_prototypes_(memory)`` runs greedy k-center (first K rows as seeds, K picks
    among the rest) and the memory is freed. With ``pool.init == 'weights_kcenter'`` (the PyTorch port) the rows are
    only counted, and at the same point ``pool.init_prototypes_from_weights_(class_weights)`` picks the prototypes
    among the class weights as they are then (e.g. proxies trained for the warm-up; at step 0 they are random).
    Since every rank sees the same gathered rows and the same class weights, every rank computes the same
    prototypes. Until then ``pool.initialized`` is False and the loop skips the ZSR term.

    Args:
        pool: a pool for which :func:`needs_prototype_init` is true (``model.pool`` of a GSP MetricNet).
        class_weights: (C, dim) rows to pick from, C >= ``pool.num_prototypes`` (e.g. the base loss's ``proxies``
            Parameter, read when the warm-up ends); required by ``init='weights_kcenter'`` and only accepted there.
    """

    def __init__(self, pool: nn.Module, class_weights: Tensor | None = None) -> None:
        if not needs_prototype_init(pool):
            raise TypeError(f"{type(pool).__name__} has no prototype warm-up (init_prototypes_, initialized, "
                            "memory_size); use PrototypeInitCallback with a GSP pool only.")
        from_weights = getattr(pool, "init", "memory_kcenter") == "weights_kcenter"
        if from_weights and class_weights is None:
            raise ValueError("the pool was built with init='weights_kcenter' but no class_weights were given; pass "
                             "the (C, dim) rows to pick the prototypes from (e.g. a proxy loss's proxies).")
        if not from_weights and class_weights is not None:
            raise ValueError("class_weights were given but the pool was built with init="
                             f"{getattr(pool, 'init', 'memory_kcenter')!r}, which picks its prototypes from a memory "
                             "of pooled embeddings; build it with init='weights_kcenter' or drop class_weights.")
        if class_weights is not None:
            pool.check_class_weights(class_weights.detach())
        self.pool = pool
        self.class_weights = class_weights
        self.memory_size = int(pool.memory_size)
        self.memory: list[Tensor] = []
        self.collected = 0

    @property
    def done(self) -> bool:
        return bool(self.pool.initialized)

    @torch.no_grad()
    def on_train_batch(self, outputs: BatchOutputs) -> None:
        if self.done:
            return
        if self.class_weights is None:
            rows = unit_ball(outputs.embeddings.detach().float())[: self.memory_size - self.collected].cpu()
            self.memory.append(rows)
            self.collected += len(rows)
        else:
            self.collected = min(self.memory_size, self.collected + len(outputs.embeddings))
        if self.collected < self.memory_size:
            return
        if self.class_weights is None:
            self.pool.init_prototypes_(torch.cat(self.memory))
            source = f"{self.memory_size} pooled embeddings"
        else:
            self.pool.init_prototypes_from_weights_(self.class_weights.detach())
            source = f"{len(self.class_weights)} class weights after {self.memory_size} pooled embeddings"
        self.memory, self.collected = [], 0
        logger.info("step %d: GSP prototypes initialised by greedy k-center from %s; ZSR (if any) is on",
                    outputs.step, source)

    def state_dict(self) -> dict[str, Any]:
        memory = torch.cat(self.memory) if self.memory else torch.empty(0)
        return {"memory": memory, "collected": self.collected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        memory = state["memory"]
        self.memory = [memory] if len(memory) else []
        self.collected = int(state.get("collected", len(memory)))  # older checkpoints saved the memory only
