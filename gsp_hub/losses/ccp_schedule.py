"""CCP alternating projections: plateau rule, proximal anchor and proxy re-initialisation (shared/spec/ccp.md §2).

Pure logic, no training loop: the loop calls, after every validation,

    if schedule.observe(map_at_r, model, ccp_loss):            # snapshots best weights/proxies on improvement
        schedule.project_(model, ccp_loss, optimizer, pool_fn)  # plateau: new anchor, λ, re-initialised proxies

adds ``schedule.proximal_penalty(model)`` to the training loss, and calls
``reinit_proxies_(ccp_loss, *pool_fn(), optimizer)`` once before training (all-zero seeds: round 0, λ = 0).
``pool_fn() -> (embeddings (M, D), labels (M,))`` embeds b samples per training class with the current model; under
DDP it must return the all-gathered pool so that every rank computes the same proxies.

Deviations from the official code, by design: the optimiser state of the re-initialised proxies is reset (the
official code keeps stale Adam moments); the best weights are loaded back into the model at each projection
(``restore_best_weights=True``; the official code only uses them as the proximal anchor — pass False for that);
k-center runs on projected embeddings (``kcenter_space='projected'``; official: ``'raw'``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gsp_hub.layers.ops import greedy_k_center
from gsp_hub.losses.ccp import CCPLoss

__all__ = ["CCPSchedule", "PlateauRule", "group_by_class", "reinit_proxies_", "reset_optimizer_state_"]

KCenterSpace = Literal["projected", "raw"]


class PlateauRule:
    """Fires when a monitored value has not improved for ``patience`` consecutive checks.

    A check improves when ``value > best + min_delta`` (``mode='max'``) or ``value < best − min_delta`` (``'min'``);
    NaN never improves. When the rule fires, the counter restarts and, with ``reset_best_on_fire`` (CCP: each
    projection starts a new instance), so does ``best``. Checkpoint with ``state_dict()`` / ``load_state_dict()``.
    """

    def __init__(
        self,
        patience: int = 3,
        min_delta: float = 1e-5,
        mode: Literal["max", "min"] = "max",
        reset_best_on_fire: bool = True,
    ) -> None:
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be an int >= 1, got {patience!r}.")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}.")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.reset_best_on_fire = reset_best_on_fire
        self.best = self._worst()
        self.num_bad_checks = 0
        self.num_fired = 0
        self.improved = False  # whether the last check improved

    def _worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    def update(self, value: float) -> bool:
        """Record one check; True exactly when this check completes ``patience`` non-improving checks in a row."""
        value = float(value)
        sign = 1.0 if self.mode == "max" else -1.0
        self.improved = sign * (value - self.best) > self.min_delta  # False for NaN
        if self.improved:
            self.best, self.num_bad_checks = value, 0
            return False
        self.num_bad_checks += 1
        if self.num_bad_checks < self.patience:
            return False
        self.num_bad_checks = 0
        self.num_fired += 1
        if self.reset_best_on_fire:
            self.best = self._worst()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_checks": self.num_bad_checks, "num_fired": self.num_fired,
                "improved": self.improved}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.num_bad_checks = float(state["best"]), int(state["num_bad_checks"])
        self.num_fired, self.improved = int(state["num_fired"]), bool(state["improved"])


def group_by_class(embeddings: Tensor, labels: Tensor, num_classes: int, min_per_class: int = 1) -> Tensor:
    """Stack embeddings per class: (M, D), labels (M,) in [0, C) -> (C, n, D), n = max(largest class, min_per_class).

    Class c's rows keep their input order and classes smaller than n are padded by repeating their own rows
    cyclically; duplicates do not change greedy k-center picks (a duplicate never beats its first occurrence).
    Every class must be present.
    """
    if embeddings.ndim != 2 or labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"expected embeddings (M, D) and labels (M,), got {tuple(embeddings.shape)} and {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes)):
        raise ValueError(
            f"labels must be integer class ids in [0, {num_classes}), got dtype {labels.dtype} with values in "
            f"[{labels.min().item()}, {labels.max().item()}]; remap the training classes to 0..num_classes-1."
        )
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().squeeze(1)[:10].tolist()
        raise ValueError(
            f"every class needs at least one embedding to re-initialise its proxies; classes {missing} have none. "
            "Embed b samples of every training class (e.g. b passes of a one-sample-per-class loader)."
        )
    order = torch.sort(labels, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    length = max(int(counts.max()), min_per_class)
    positions = starts[:, None] + torch.arange(length, device=labels.device)[None, :] % counts[:, None]
    return embeddings[order][positions]


def reset_optimizer_state_(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> None:
    """Zero every state entry of ``params`` in place (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``), i.e. restart
    the optimiser on them as if freshly added. Parameters without state yet are left alone."""
    for param in params:
        state = optimizer.state.get(param)
        for key, value in (state or {}).items():
            if isinstance(value, Tensor):
                value.zero_()
            elif isinstance(value, (int, float)):
                state[key] = type(value)(0)


@torch.no_grad()
def reinit_proxies_(
    ccp_loss: CCPLoss,
    embeddings: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    kcenter_space: KCenterSpace = "projected",
) -> Tensor:
    """Re-initialise every class's proxies by greedy k-center over that class's embeddings, in place.

    For class c, P = ``ccp_loss.proxies_per_class`` picks come from the embeddings labelled c, seeded with the P rows
    of ``ccp_loss.best_proxies`` of class c (seeds mark covered regions and are not picked). The picks are written
    pick-major (row = pick·C + c) into ``ccp_loss.proxies`` and, if ``optimizer`` is given, the optimiser state of the
    proxies is zeroed.

    Args:
        ccp_loss: the loss holding ``proxies`` (C·P, D) and ``best_proxies``.
        embeddings: (M, D) embeddings of training samples (typically b per class); labels: (M,) in [0, C).
        optimizer: the optimiser that trains ``ccp_loss.proxies`` (it must hold them).
        kcenter_space: ``'projected'`` (candidates and seeds projected with the loss's normalisation) or ``'raw'``.

    Returns:
        The new proxies (C·P, D), the tensor ``ccp_loss.proxies`` now holds.
    """
    num_classes, per_class, dim = ccp_loss.num_classes, ccp_loss.proxies_per_class, ccp_loss.embed_dim
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"embeddings must be (M, {dim}) to match the proxies, got {tuple(embeddings.shape)}.")
    if kcenter_space not in ("projected", "raw"):
        raise ValueError(f"kcenter_space must be 'projected' or 'raw', got {kcenter_space!r}.")
    proxies = ccp_loss.proxies
    if optimizer is not None and not any(p is proxies for group in optimizer.param_groups for p in group["params"]):
        raise ValueError("optimizer does not hold ccp_loss.proxies; add the loss's parameters to the optimizer.")
    candidates = group_by_class(embeddings.detach().to(proxies), labels.to(proxies.device), num_classes, per_class)
    seeds = ccp_loss.best_proxies.view(per_class, num_classes, dim).transpose(0, 1)  # (C, P, D)
    if kcenter_space == "projected":
        candidates, seeds = ccp_loss.project(candidates), ccp_loss.project(seeds)
    picks = greedy_k_center(candidates, per_class, seeds=seeds)  # (P·C, D), pick-major
    proxies.copy_(picks)
    if optimizer is not None:
        reset_optimizer_state_(optimizer, [proxies])
    return proxies.detach()


class CCPSchedule:
    """Best tracking, projections and the proximal term of CCP.

    Args:
        patience: non-improving validations before a projection (3).
        min_delta: improvement threshold of the monitored metric (1e-5).
        lam: λ0 of the proximal term (2e-4); λ = 0 before the first projection, λ0·decay^r after the r-th.
        lam_decay: decay (1.0).
        restore_best_weights: load the best weights into the model at each projection (see module docstring).
        kcenter_space: space of the proxy k-center, passed to :func:`reinit_proxies_`.

    ``state_dict()`` / ``load_state_dict()`` make it checkpointable (``accelerator.register_for_checkpointing``).
    """

    def __init__(
        self,
        patience: int = 3,
        min_delta: float = 1e-5,
        lam: float = 2e-4,
        lam_decay: float = 1.0,
        restore_best_weights: bool = True,
        kcenter_space: KCenterSpace = "projected",
    ) -> None:
        if not (lam >= 0 and lam_decay > 0):
            raise ValueError(f"lam must be >= 0 and lam_decay > 0, got lam={lam}, lam_decay={lam_decay}.")
        self.plateau = PlateauRule(patience, min_delta, "max", reset_best_on_fire=True)
        self.lam, self.lam_decay = lam, lam_decay
        self.restore_best_weights, self.kcenter_space = restore_best_weights, kcenter_space
        self.round = 0
        self.best_state: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    @property
    def proximal_weight(self) -> float:
        """Current λ: 0 before the first projection, λ0·decay^round afterwards."""
        return 0.0 if self.round == 0 else self.lam * self.lam_decay**self.round

    def observe(self, metric: float, model: nn.Module, ccp_loss: CCPLoss) -> bool:
        """Record one validation value; on improvement snapshot the model state and the proxies.

        Returns True when a projection is due (then call :meth:`project_`). ``model`` is the unwrapped model.
        """
        fired = self.plateau.update(metric)
        if self.plateau.improved:
            self.best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            ccp_loss.snapshot_best_proxies_()
        return fired

    def project_(
        self,
        model: nn.Module,
        ccp_loss: CCPLoss,
        optimizer: torch.optim.Optimizer | None,
        pool_fn: Callable[[], tuple[Tensor, Tensor]],
    ) -> Tensor:
        """One projection: anchor ← best weights, λ update, optional restore, then re-initialised proxies.

        ``pool_fn`` is called after the restore, so the candidate embeddings come from the weights training
        continues from. Returns the new proxies (C·P, D).
        """
        if not self.best_state:
            raise RuntimeError("project_ needs a best state: call observe() with a validation value first.")
        parameter_names = [name for name, _ in model.named_parameters()]
        missing = [name for name in parameter_names if name not in self.best_state]
        if missing:
            raise ValueError(
                f"model parameters {missing[:3]} are not in the best state recorded by observe(); pass the same "
                "(unwrapped) model to observe() and project_()."
            )
        self.round += 1
        self.anchor = {name: self.best_state[name] for name in parameter_names}
        if self.restore_best_weights:
            model.load_state_dict(self.best_state)
        embeddings, labels = pool_fn()
        return reinit_proxies_(ccp_loss, embeddings, labels, optimizer, kcenter_space=self.kcenter_space)

    def proximal_penalty(self, model: nn.Module) -> Tensor:
        """(λ/2)·Σ‖θ − θ_anchor‖² over the model's parameters (its gradient is λ(θ − θ_anchor)); 0 before round 1.

        ``model`` is the unwrapped model (parameter names as at :meth:`project_`); proxies are not included.
        """
        named = dict(model.named_parameters())
        if not named:
            raise ValueError(f"model {type(model).__name__} has no parameters to anchor.")
        reference = next(iter(named.values()))
        weight = self.proximal_weight
        if weight == 0.0 or not self.anchor:
            return reference.new_zeros(())
        missing = self.anchor.keys() - named.keys()
        if missing:
            raise ValueError(
                f"anchor parameters {sorted(missing)[:3]} are not in the model; pass the unwrapped model "
                "(accelerator.unwrap_model(model))."
            )
        total = sum(((named[name] - anchor).pow(2).sum() for name, anchor in self.anchor.items()
                     if named[name].requires_grad), reference.new_zeros(()))
        return 0.5 * weight * total

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict(), "round": self.round, "best_state": self.best_state,
                "anchor": self.anchor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.plateau.load_state_dict(state["plateau"])
        self.round = int(state["round"])
        self.best_state, self.anchor = dict(state["best_state"]), dict(state["anchor"])
