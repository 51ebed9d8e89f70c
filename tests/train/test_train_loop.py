"""The training loop's parts (config, prototype warm-up, schedule, seeded augmentation) and a whole tiny run."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from train_fixtures import tiny_config

from gsp_hub.hub import from_pretrained
from gsp_hub.layers import GSP
from gsp_hub.losses import GSPLoss, create_loss
from gsp_hub.train import TrainConfig, train
from gsp_hub.train.callbacks import BatchOutputs, Callback, PrototypeInitCallback
from gsp_hub.train.data import SeededBatchDataset, seeded_random_state
from gsp_hub.train.engine import Trainer, learning_rate_factor
from gsp_hub.train.metric_learning import MetricLearningTask, loss_class_weights


def farthest_points(memory: torch.Tensor, k: int) -> torch.Tensor:
    """Brute-force GSP init: seeds = the first k rows (in the unit ball), k farthest-point picks among the rest."""
    rows = memory.double() / memory.double().norm(dim=1, keepdim=True).clamp(min=1)
    chosen = [rows[i] for i in range(k)]
    candidates = rows[k:]
    picks = []
    for _ in range(k):
        distances = torch.stack([min(((c - s) ** 2).sum() for s in chosen) for c in candidates])
        best = int(torch.argmax(distances))
        picks.append(candidates[best])
        chosen.append(candidates[best])
    return torch.stack(picks)


def test_prototype_init_callback_runs_k_center_once_the_memory_is_full_and_resumes():
    torch.manual_seed(0)
    pool = GSP(6, num_prototypes=3, memory_size=10)
    batches = [2 * torch.randn(4, 6) for _ in range(3)]
    callback = PrototypeInitCallback(pool)
    callback.on_train_batch(BatchOutputs(0, batches[0], torch.zeros(4), None))
    state = callback.state_dict()  # a checkpoint in the middle of the warm-up
    callback.on_train_batch(BatchOutputs(1, batches[1], torch.zeros(4), None))
    assert not pool.initialized
    callback.on_train_batch(BatchOutputs(2, batches[2], torch.zeros(4), None))  # 12 rows >= 10: init from 10
    assert pool.initialized
    expected = farthest_points(torch.cat(batches)[:10], 3)
    torch.testing.assert_close(pool.prototypes.detach().double(), expected, rtol=1e-6, atol=1e-6)

    resumed_pool = GSP(6, num_prototypes=3, memory_size=10)
    resumed = PrototypeInitCallback(resumed_pool)
    resumed.load_state_dict(state)
    for step in (1, 2):
        resumed.on_train_batch(BatchOutputs(step, batches[step], torch.zeros(4), None))
    torch.testing.assert_close(resumed_pool.prototypes, pool.prototypes)


def test_prototype_init_callback_from_class_weights_reads_them_when_the_warm_up_ends_and_resumes():
    torch.manual_seed(0)
    pool = GSP(6, num_prototypes=3, memory_size=10, init="weights_kcenter")
    proxies = torch.nn.Parameter(2 * torch.randn(5, 6))
    batches = [torch.randn(4, 6) for _ in range(3)]
    callback = PrototypeInitCallback(pool, proxies)
    callback.on_train_batch(BatchOutputs(0, batches[0], torch.zeros(4), None))
    state = callback.state_dict()  # a checkpoint in the middle of the warm-up: 4 rows seen, none stored
    assert state["collected"] == 4 and len(state["memory"]) == 0
    callback.on_train_batch(BatchOutputs(1, batches[1], torch.zeros(4), None))
    assert not pool.initialized
    with torch.no_grad():
        proxies.mul_(-0.5)  # the proxies train during the warm-up; the init reads them as they are at its end
    callback.on_train_batch(BatchOutputs(2, batches[2], torch.zeros(4), None))  # 12 rows >= 10
    assert pool.initialized
    expected = GSP(6, num_prototypes=3, memory_size=1, init="weights_kcenter")
    expected.init_prototypes_from_weights_(proxies.detach())
    torch.testing.assert_close(pool.prototypes, expected.prototypes, rtol=0, atol=0)

    resumed_pool = GSP(6, num_prototypes=3, memory_size=10, init="weights_kcenter")
    resumed = PrototypeInitCallback(resumed_pool, proxies)
    resumed.load_state_dict(state)
    resumed.on_train_batch(BatchOutputs(1, batches[1], torch.zeros(4), None))
    assert not resumed_pool.initialized
    resumed.on_train_batch(BatchOutputs(2, batches[2], torch.zeros(4), None))
    torch.testing.assert_close(resumed_pool.prototypes, pool.prototypes, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("init", "class_weights", "message"),
    [
        ("weights_kcenter", None, "the pool was built with init='weights_kcenter' but no class_weights were given"),
        ("memory_kcenter", torch.randn(5, 6), "class_weights were given but the pool was built with "
                                              "init='memory_kcenter'"),
        ("weights_kcenter", torch.randn(2, 6), "weights must have at least num_prototypes = 3 rows (one per "
                                               "prototype), got 2"),
    ],
)
def test_prototype_init_callback_rejects_class_weights_that_do_not_fit_the_pool(init, class_weights, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PrototypeInitCallback(GSP(6, num_prototypes=3, memory_size=10, init=init), class_weights)


def test_loss_class_weights_are_the_proxies_of_a_proxy_loss():
    config = TrainConfig(loss="ms")
    proxy_loss = GSPLoss(create_loss("proxy_anchor", num_classes=4, embed_dim=8))
    assert loss_class_weights(config, proxy_loss) is proxy_loss.base_loss.proxies
    ccp_loss = GSPLoss(create_loss("ccp", num_classes=4, embed_dim=8, proxies_per_class=2))
    assert loss_class_weights(config, ccp_loss).shape == (8, 8)
    with pytest.raises(ValueError, match=re.escape("--loss ms has none; use a proxy loss (--loss proxy_anchor or "
                                                   "ccp) or init=memory_kcenter")):
        loss_class_weights(config, GSPLoss(create_loss("ms", num_classes=4, embed_dim=8)))


def test_run_with_weights_kcenter_picks_the_prototypes_among_the_proxies(tmp_path, tiny_dataset):
    """--loss proxy_anchor --pool-kwargs init=weights_kcenter: at the end of the warm-up (memory_size = 16 pooled
    embeddings, the first 16-image step) the prototypes are the k-center picks among the proxies of that moment."""
    config = tiny_config(tmp_path / "run", tiny_dataset, epochs=1, loss="proxy_anchor", zsr_weight=0.0,
                         pool_kwargs={"num_prototypes": 4, "memory_size": 16, "init": "weights_kcenter"})
    task = MetricLearningTask(config)

    class FirstInitialised(Callback):
        """Records the proxies and prototypes right after the step that initialised the prototypes."""

        def on_train_batch(self, outputs: BatchOutputs) -> None:
            self.steps = getattr(self, "steps", []) + [outputs.step]
            if task.model.pool.initialized and not hasattr(self, "prototypes"):
                self.proxies = task.loss_fn.base_loss.proxies.detach().clone()
                self.prototypes = task.model.pool.prototypes.detach().clone()
                self.step = outputs.step

    spy = FirstInitialised()
    Trainer(task, [spy]).run()
    assert spy.step == spy.steps[0]
    expected = GSP(16, num_prototypes=4, memory_size=1, init="weights_kcenter")
    expected.init_prototypes_from_weights_(spy.proxies)
    torch.testing.assert_close(spy.prototypes, expected.prototypes.detach(), rtol=0, atol=0)


def test_learning_rate_factor_warmup_then_cosine():
    assert [learning_rate_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    for step in range(2, 12):
        expected = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 2) / 8)))
        assert learning_rate_factor(step, 10, 2) == pytest.approx(expected)
    assert learning_rate_factor(7, 10, 0, "constant") == 1.0


def test_seeded_batches_do_not_depend_on_order_or_global_rng():
    class Noisy(torch.utils.data.Dataset):  # stands in for a datasets.Dataset with a random timm transform
        def __len__(self):
            return 100

        def __getitems__(self, indices):
            return [torch.rand(3) + random.random() + np.random.rand() + i for i in indices]

    dataset = SeededBatchDataset(Noisy(), seed=7)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = dataset.__getitems__([3, 4])
    dataset.__getitems__([9, 1])
    torch.manual_seed(123)
    assert all(torch.equal(a, b) for a, b in zip(first, dataset.__getitems__([3, 4])))
    dataset.set_epoch(1)
    assert not torch.equal(first[0], dataset.__getitems__([3, 4])[0])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with seeded_random_state([1, 2]):
        torch.rand(5)
    assert torch.equal(torch.get_rng_state(), state) and before[0].shape == state.shape


def test_train_config_yaml_round_trip_and_errors(tmp_path):
    config = TrainConfig(embed_dim=64, loss="xbm", loss_kwargs={"memory_size": 512}, output_dir=str(tmp_path))
    path = config.save(tmp_path)
    assert TrainConfig.from_yaml(path) == config
    assert TrainConfig.from_yaml(path, lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown training option\\(s\\) \\['learning_rate'\\]"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="batch_size=30 must be a multiple of m_per_class=4"):
        TrainConfig(batch_size=30, m_per_class=4)
    with pytest.raises(ValueError, match="mixed_precision must be one of \\('no', 'bf16'\\)"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="zsr_weight must be a number in \\[0, 1\\], got 2.0"):
        TrainConfig(zsr_weight=2.0)
    with pytest.raises(FileNotFoundError, match="config file"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_tiny_run_writes_a_complete_run_folder(tmp_path, tiny_dataset):
    output = tmp_path / "run"
    config = tiny_config(output, tiny_dataset, epochs=2, eval_at_start=True)
    summary = train(config)

    assert summary["steps"] == 10  # 2 epochs x 80 images / 16
    assert [row["step"] for row in summary["history"]] == [0, 5, 10]
    assert summary["initial"]["step"] == 0 and summary["best"]["step"] in (5, 10)
    assert json.loads((output / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    assert TrainConfig.from_dict(yaml.safe_load((output / "train_config.yaml").read_text())) == config
    assert (output / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((output / "logs").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]

    # the export is the best model: it reloads, its prototypes were initialised, and it reproduces the metric
    model = from_pretrained(output / "model")
    assert bool(model.pool.initialized)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    best_step = summary["best"]["step"]
    checkpoint = output / "checkpoints" / f"checkpoint_{best_step // 5 - 1}" / "model.safetensors"
    weights = {k.removeprefix("model."): v for k, v in safetensors.torch.load_file(str(checkpoint)).items()}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], msg=name)
    assert summary["best"]["map@r"] == max(row["map@r"] for row in summary["history"][1:])
