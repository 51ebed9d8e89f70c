"""CCP in the training loop: proxy initialisation, proximal penalty and plateau projections as one callback.

The loop calls the callback at three points (shared/spec/ccp.md §2):

* :meth:`CCPCallback.on_train_start` — once before the first step of a new run: each class's proxies are
  initialised by greedy k-center over b embedded samples of that class (all-zero seeds, round 0, λ = 0);
* :meth:`CCPCallback.loss_penalty` — every step: the proximal term (λ/2)·‖θ − θ_anchor‖², added to the loss;
* :meth:`CCPCallback.on_evaluate` — after every evaluation during training (not the untrained step-0 one): MAP@R
  goes to :meth:`CCPSchedule.observe`; when it has not improved for ``patience`` evaluations, the schedule projects
  (anchor ← best weights, λ update, best weights restored, proxies re-initialised, their Adam state zeroed).

The monitored MAP@R is the engine's per-epoch evaluation of the **validation split** (with the zero-shot protocol:
validation classes held out of the training classes, never trained on); the test split never chooses anything.

Candidate pool: :class:`ClassBalancedPool` embeds b training samples per class (eval transform, eval mode, no
gradients) drawn with a generator seeded by ``(seed, round)``, each process embedding a shard and all-gathering
the result, so every rank computes the same proxies. The schedule state (round, plateau counters, best and anchor
weights) is checkpointed through :meth:`CCPCallback.state_dict` with the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from datasets import Dataset
from torch import Tensor, nn

from gsp_hub.checks import check_int, check_kwargs
from gsp_hub.data import create_image_transforms, with_image_transform
from gsp_hub.data.transforms import ImageTransform
from gsp_hub.losses import CCPLoss, CCPSchedule, ccp_sizes, reinit_proxies_
from gsp_hub.train.callbacks import Callback
from gsp_hub.train.config import TrainConfig
from gsp_hub.train.data import eval_loader
from gsp_hub.train.evaluation import embed_split

__all__ = ["CCPCallback", "ClassBalancedPool", "create_ccp_callback", "create_ccp_schedule"]

logger = logging.getLogger(__name__)

EmbeddingPool = Callable[[int], tuple[Tensor, Tensor]]  # draw -> (embeddings (M, D), labels (M,))

def create_ccp_schedule(options: Mapping[str, Any]) -> tuple[CCPSchedule, int | None]:
    """``(CCPSchedule(**schedule options), pool_size)`` from the ``ccp_kwargs`` of a run.

    Accepted keys: patience (3), min_delta (1e-5), lam (2e-4), lam_decay (1.0), restore_best_weights (True),
    kcenter_space ('projected' or 'raw') and pool_size (b samples per class; None: 12 below 1000 classes, else 7).
    """
    check_kwargs("ccp_kwargs", options, CCPSchedule, extra=("pool_size",))
    schedule_options = dict(options)
    pool_size = schedule_options.pop("pool_size", None)
    if pool_size is not None:
        check_int("ccp_kwargs['pool_size']", pool_size, minimum=1, meaning="samples per class")
    return CCPSchedule(**schedule_options), pool_size


class ClassBalancedPool:
    """Embeddings of ``per_class`` training samples of every class, identical on every process.

    Args:
        network: the (prepared) training network; its output is embeddings (B, D) or a tuple starting with them.
        dataset: training rows (``image``, ``label`` columns, labels 0..C-1), untransformed.
        transform: the evaluation transform (no augmentation).
        per_class: b, samples drawn per class (all of a class's rows if it has fewer).
        accelerator: shards the pass over processes and all-gathers the result.
        seed: with the draw index, seeds the choice of samples.
        batch_size: images per forward pass and process.

    ``pool(draw) -> (embeddings (M, D) float32, labels (M,))`` with M = Σ_c min(b, n_c), on every process.
    """

    def __init__(self, network: nn.Module, dataset: Dataset, transform: ImageTransform, per_class: int,
                 accelerator: Accelerator, *, seed: int, batch_size: int = 256) -> None:
        self.network, self.dataset, self.transform = network, dataset, transform
        self.labels = np.asarray(dataset["label"])
        self.per_class, self.accelerator, self.seed, self.batch_size = per_class, accelerator, seed, batch_size

    def indices(self, draw: int) -> np.ndarray:
        """Rows of the ``draw``-th pool: up to b random rows per class, in class order (same on every process)."""
        generator = np.random.default_rng([self.seed, draw])
        rows = []
        for label in np.unique(self.labels):
            members = np.flatnonzero(self.labels == label)
            rows.append(np.sort(generator.choice(members, min(self.per_class, len(members)), replace=False)))
        return np.concatenate(rows)

    @torch.no_grad()
    def __call__(self, draw: int) -> tuple[Tensor, Tensor]:
        subset = with_image_transform(self.dataset.select(self.indices(draw)), self.transform)
        accelerator = self.accelerator
        plain_loader = eval_loader(subset, self.batch_size, num_workers=0, device=accelerator.device)
        loader = prepare_data_loader(plain_loader, accelerator.device,
                                     num_processes=accelerator.num_processes, process_index=accelerator.process_index,
                                     put_on_device=True)
        was_training = self.network.training
        with torch.random.fork_rng(devices=[]):  # the pass leaves the training RNG streams untouched
            embeddings, labels = embed_split(self.network, loader, accelerator, description="ccp pool")
        self.network.train(was_training)
        return embeddings.to(accelerator.device), labels.to(accelerator.device)


class CCPCallback(Callback):
    """The CCP schedule of a run (module docstring).

    Args:
        model: the unwrapped model (parameter names as in its ``state_dict``).
        ccp_loss: the :class:`CCPLoss` being trained (unwrapped).
        optimizer: the optimizer holding ``ccp_loss.proxies`` (their state is zeroed at each re-initialisation).
        pool: ``pool(draw) -> (embeddings (M, D), labels (M,))``, the same on every process
            (:class:`ClassBalancedPool`); draw = the schedule round (0 for the initialisation).
        schedule: the :class:`CCPSchedule` (patience, λ, ...).
        monitor: the evaluation metric the plateau rule watches (``'map@r'``).
    """

    def __init__(self, model: nn.Module, ccp_loss: CCPLoss, optimizer: torch.optim.Optimizer, pool: EmbeddingPool,
                 schedule: CCPSchedule, monitor: str = "map@r") -> None:
        if not isinstance(ccp_loss, CCPLoss):
            raise TypeError(f"ccp_loss must be a CCPLoss, got {type(ccp_loss).__name__}.")
        self.model, self.ccp_loss, self.optimizer, self.pool = model, ccp_loss, optimizer, pool
        self.schedule, self.monitor = schedule, monitor
        self.proxies_initialized = False

    def _pool(self) -> tuple[Tensor, Tensor]:
        return self.pool(self.schedule.round)

    def on_train_start(self) -> None:
        """Initialise the proxies by greedy k-center (once per run; a resumed run keeps its checkpointed proxies)."""
        if self.proxies_initialized:
            return
        reinit_proxies_(self.ccp_loss, *self._pool(), self.optimizer, kcenter_space=self.schedule.kcenter_space)
        self.proxies_initialized = True
        logger.info("CCP: %d proxies initialised by greedy k-center over embedded training samples",
                    self.ccp_loss.proxies.shape[0])

    def loss_penalty(self) -> Tensor:
        """(λ/2)·Σ‖θ − θ_anchor‖² over the model's parameters (0 before the first projection)."""
        return self.schedule.proximal_penalty(self.model)

    def on_evaluate(self, metrics: Mapping[str, float], step: int) -> None:
        """Feed the monitored metric of a training-time evaluation to the plateau rule; project on a plateau."""
        if step == 0:
            return  # the untrained baseline is not a validation of the training run
        if self.monitor not in metrics:
            raise ValueError(f"CCP monitors {self.monitor!r}, but the evaluation returned only {sorted(metrics)}.")
        if self.schedule.observe(metrics[self.monitor], self.model, self.ccp_loss):
            self.schedule.project_(self.model, self.ccp_loss, self.optimizer, self._pool)
            logger.info("step %d: CCP projection %d (%s has not improved for %d evaluations): best weights "
                        "restored, proxies re-initialised, λ = %g", step, self.schedule.round, self.monitor,
                        self.schedule.plateau.patience, self.schedule.proximal_weight)

    def state_dict(self) -> dict[str, Any]:
        """Flat mapping (tensors at the top level, as the run's checkpoint files expect)."""
        state = self.schedule.state_dict()
        flat: dict[str, Any] = {"plateau": state["plateau"], "round": state["round"],
                                "proxies_initialized": self.proxies_initialized}
        for group in ("best_state", "anchor"):
            flat.update({f"{group}/{name}": tensor for name, tensor in state[group].items()})
        return flat

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        nested: dict[str, Any] = {"plateau": state["plateau"], "round": state["round"], "best_state": {},
                                  "anchor": {}}
        for key, value in state.items():
            group, _, name = key.partition("/")
            if name and group in ("best_state", "anchor"):
                nested[group][name] = value
        self.schedule.load_state_dict(nested)
        self.proxies_initialized = bool(state["proxies_initialized"])


def create_ccp_callback(config: TrainConfig, model: nn.Module, ccp_loss: CCPLoss, optimizer: torch.optim.Optimizer,
                        network: nn.Module, train_split: Dataset, accelerator: Accelerator) -> CCPCallback:
    """The CCP callback of a run: schedule from ``config.ccp_kwargs``, pool of b samples per class of
    ``train_split`` under the model's evaluation transform (``config.img_size``), embedded by ``network``."""
    schedule, pool_size = create_ccp_schedule(config.ccp_kwargs)
    transform = create_image_transforms(model, input_size=config.img_size or None).eval
    pool = ClassBalancedPool(network, train_split, transform, pool_size or ccp_sizes(ccp_loss.num_classes)[1],
                             accelerator, seed=config.seed, batch_size=config.eval_batch_size)
    return CCPCallback(model, ccp_loss, optimizer, pool, schedule)
