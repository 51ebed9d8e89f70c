"""XML and CCP through the real training loop: `gsp-hub train --loss xml+ms` / `--loss ccp`, the CCP plateau
callback against a brute-force plateau rule, proxy re-initialisation with zeroed Adam state, checkpointed schedule
state and a two-process gloo run ending with identical proxies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from accelerate.utils import set_seed
from test_ddp import accelerate_launch, environment
from torch import nn
from train_fixtures import TINY_MODEL, WITH_VALIDATION, tiny_config

from gsp_hub.cli import main
from gsp_hub.data import create_image_transforms, with_image_transform
from gsp_hub.losses import CCPLoss, CCPSchedule, XMLLoss
from gsp_hub.train.ccp_callback import CCPCallback, create_ccp_schedule
from gsp_hub.train import MetricLearningTask, Trainer

DDP_SCRIPT = Path(__file__).with_name("ccp_ddp_run.py")
FORCED_PLATEAU = {"patience": 1, "min_delta": 1.0}  # evaluation 1 improves on -inf, evaluation 2 cannot: projection
TINY_FLAGS = ["--backbone", "test_vit", "--backbone-kwargs", "img_size=32", "patch_size=8", "--embed-dim", "16",
              "--batch-size", "12", "--m-per-class", "4", "--eval-batch-size", "64", "--no-eval-at-start"]


def reference_projections(values: list[float], patience: int, min_delta: float) -> list[tuple[int, int]]:
    """(check index of each CCP projection, index of the best check of that plateau instance): a projection follows
    ``patience`` checks in a row without value > best + min_delta; counter and best restart after each one
    (brute force, shared/spec/ccp.md §2)."""
    projections, best, best_index, bad = [], -float("inf"), -1, 0
    for index, value in enumerate(values):
        if value > best + min_delta:
            best, best_index, bad = value, index, 0
            continue
        bad += 1
        if bad == patience:
            projections.append((index, best_index))
            best, bad = -float("inf"), 0
    return projections


def test_xml_cli_trains_the_prototypes(tmp_path, tiny_dataset):
    output = tmp_path / "xml"
    code = main(["train", "--dataset", str(tiny_dataset), "--output-dir", str(output), *TINY_FLAGS, "--pool", "proto",
                 "--pool-kwargs", "num_prototypes=4", "--loss", "xml+ms", "--xml-kwargs", "weight=0.2",
                 "--epochs", "1", "--max-steps", "3"])
    assert code == 0
    summary = json.loads((output / "metrics.json").read_text())
    assert summary["steps"] == 3 and 0.0 < summary["best"]["map@r"] <= 1.0 and 0.0 < summary["best"]["recall@1"]
    # the pool's prototypes are trained only through the attributes, i.e. by the XML term
    set_seed(0)
    initial = timm.create_model("metric_net", pool="proto", num_prototypes=4, embed_dim=16,
                                backbone=TINY_MODEL["backbone"], backbone_kwargs=TINY_MODEL["backbone_kwargs"])
    trained = safetensors.torch.load_file(str(output / "model" / "model.safetensors"))
    assert trained["pool.prototypes"].shape == initial.pool.prototypes.shape
    assert not torch.allclose(trained["pool.prototypes"], initial.pool.prototypes)


def test_xml_needs_a_pool_with_attributes(tmp_path, tiny_dataset, capsys):
    code = main(["train", "--dataset", str(tiny_dataset), "--output-dir", str(tmp_path / "bad"), *TINY_FLAGS,
                 "--pool", "avg", "--loss", "xml+ms", "--epochs", "1"])
    assert code == 2
    assert "--pool proto" in capsys.readouterr().err


def test_xml_loss_module_is_built_from_config(tmp_path, tiny_dataset):
    config = tiny_config(tmp_path / "x", tiny_dataset, pool="proto", pool_kwargs={"num_prototypes": 4},
                         loss="xml+contrastive", xml_kwargs={"target": "sample_embeddings", "weight": 0.3})
    from gsp_hub.train.metric_learning import create_loss_module, create_model

    loss = create_loss_module(config, 5, create_model(config))
    assert isinstance(loss, XMLLoss) and loss.target == "sample_embeddings" and loss.weight == 0.3
    with pytest.raises(ValueError, match="xml_kwargs"):
        create_loss_module(tiny_config(tmp_path / "y", tiny_dataset, pool="proto", pool_kwargs={}, loss="xml+ms",
                                       xml_kwargs={"gamma": 1}), 5, create_model(config))


def test_ccp_callback_projects_exactly_by_the_plateau_rule():
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    ccp_loss = CCPLoss(num_classes=3, embed_dim=4, proxies_per_class=2)
    optimizer = torch.optim.AdamW([*model.parameters(), *ccp_loss.parameters()], lr=1e-2)
    inputs, labels = torch.randn(15, 6), torch.arange(3).repeat(5)
    draws: list[int] = []

    def pool(draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        draws.append(draw)
        with torch.no_grad():
            return model(inputs + draw), labels

    values = [0.10, 0.20, 0.20, 0.15, 0.30, 0.31, 0.30, 0.29, 0.28, 0.50, 0.50]
    expected = reference_projections(values, patience=2, min_delta=0.005)
    assert expected == [(3, 1), (7, 5)]  # the sequence exercises two plateau instances
    callback = CCPCallback(model, ccp_loss, optimizer, pool, CCPSchedule(patience=2, min_delta=0.005))
    callback.on_train_start()
    assert draws == [0] and callback.loss_penalty().item() == 0.0
    callback.on_evaluate({"map@r": 0.99}, step=0)  # the untrained baseline is not a validation
    snapshots, projected_at = [], []
    for index, value in enumerate(values):
        loss = ccp_loss(model(inputs), labels) + callback.loss_penalty()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        snapshots.append({name: p.detach().clone() for name, p in model.named_parameters()})
        rounds_before = callback.schedule.round
        callback.on_evaluate({"map@r": value}, step=index + 1)
        if callback.schedule.round > rounds_before:
            projected_at.append(index)
            best_index = dict(expected)[index]
            for name, parameter in model.named_parameters():  # best weights restored and used as the anchor
                torch.testing.assert_close(parameter.detach(), snapshots[best_index][name], rtol=0, atol=0)
                torch.testing.assert_close(callback.schedule.anchor[name], snapshots[best_index][name], rtol=0, atol=0)
            assert not any(torch.as_tensor(v).any() for v in optimizer.state[ccp_loss.proxies].values())
    assert projected_at == [index for index, _ in expected]
    assert draws == [0, 1, 2]  # one pool per (re-)initialisation, drawn with the round as seed
    # proximal term: (λ/2)·‖θ − θ_anchor‖² in float64
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    expected_penalty = 0.5 * 2e-4 * sum(
        (p.double() - callback.schedule.anchor[name].double()).pow(2).sum() for name, p in model.named_parameters())
    torch.testing.assert_close(callback.loss_penalty().double(), expected_penalty)
    with pytest.raises(ValueError, match="map@r"):
        callback.on_evaluate({"recall@1": 0.5}, step=99)


def test_ccp_schedule_options_are_checked():
    schedule, pool_size = create_ccp_schedule({"patience": 2, "lam": 1e-3, "pool_size": 5})
    assert schedule.plateau.patience == 2 and schedule.lam == 1e-3 and pool_size == 5
    with pytest.raises(ValueError, match=r"ccp_kwargs has unknown key\(s\) \['patients'\]; .* accepts .*'patience'"):
        create_ccp_schedule({"patients": 2})
    with pytest.raises(ValueError, match="pool_size"):
        create_ccp_schedule({"pool_size": 0})


def test_ccp_training_forced_plateau_reinitialises_proxies_and_resumes(tmp_path, tiny_dataset):
    config = tiny_config(tmp_path / "ccp", tiny_dataset, loss="ccp", pool="avg", pool_kwargs={},
                         ccp_kwargs=FORCED_PLATEAU, **WITH_VALIDATION)
    trainer = Trainer(MetricLearningTask(config))
    summary = trainer.run()
    callback = trainer.callbacks[-1]
    assert isinstance(callback, CCPCallback)
    maps = [row["validation/map@r"] for row in summary["history"]]  # the plateau rule watches validation
    assert len(maps) == 2 and all(0.0 < value <= 1.0 for value in maps)
    assert reference_projections(maps, **FORCED_PLATEAU) == [(1, 0)] and callback.schedule.round == 1
    assert callback.schedule.proximal_weight == pytest.approx(2e-4)

    # the projection happened after the last evaluation: the proxies' Adam state is zero, the model's is not
    ccp_loss = trainer.task.loss_fn.base_loss
    proxy_state = trainer.optimizer.state[ccp_loss.proxies]
    assert set(proxy_state) >= {"step", "exp_avg", "exp_avg_sq"}
    assert all(not torch.as_tensor(value).any() for value in proxy_state.values())
    assert trainer.optimizer.state[next(trainer.model.parameters())]["exp_avg"].any()

    # best weights of the instance (evaluation 1) restored: the model equals the checkpoint saved after epoch 1
    first = Path(config.output_dir) / "checkpoints" / "checkpoint_0" / "model.safetensors"
    saved = safetensors.torch.load_file(str(first))  # the wrapped training network: keys "model.<name>"
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, saved[f"model.{name}"], rtol=0, atol=0, msg=name)

    # every proxy is the projected embedding of a training image of its class under the restored model
    model = trainer.model.eval()
    transform = create_image_transforms(model, input_size=config.img_size).eval
    rows = with_image_transform(trainer.task.data.splits.train, transform)
    with torch.no_grad():
        images = torch.stack([row["pixel_values"] for row in rows])
        embeddings = ccp_loss.project(model(images))
    labels = torch.as_tensor(np.asarray(trainer.task.data.splits.train["label"]))
    proxies = ccp_loss.proxies.detach()
    for row, proxy in enumerate(proxies):
        candidates = embeddings[labels == row % ccp_loss.num_classes]
        assert torch.cdist(proxy[None], candidates).min() < 1e-4, row
    assert len(torch.unique(proxies, dim=0)) == len(proxies)

    # the schedule state is checkpointed with the run and restored on resume
    resumed = Trainer(MetricLearningTask(tiny_config(tmp_path / "ccp", tiny_dataset, loss="ccp", pool="avg",
                                                     pool_kwargs={}, ccp_kwargs=FORCED_PLATEAU, resume="latest",
                                                     **WITH_VALIDATION)))
    restored = resumed.callbacks[-1]
    assert restored.proxies_initialized and restored.schedule.round == 1
    assert restored.schedule.plateau.state_dict() == callback.schedule.plateau.state_dict()
    assert restored.schedule.anchor.keys() == callback.schedule.anchor.keys()
    for name, value in callback.schedule.anchor.items():
        torch.testing.assert_close(restored.schedule.anchor[name], value, rtol=0, atol=0)
    torch.testing.assert_close(resumed.task.loss_fn.base_loss.proxies, proxies, rtol=0, atol=0)


def test_ccp_two_processes_end_with_identical_proxies(tmp_path, tiny_dataset):
    process = subprocess.run(accelerate_launch(2, str(DDP_SCRIPT), str(tiny_dataset), str(tmp_path)),
                             check=False, env=environment(), capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, f"stdout:\n{process.stdout[-3000:]}\nstderr:\n{process.stderr[-5000:]}"
    ranks = [safetensors.torch.load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    assert ranks[0]["round"].item() == 1 and ranks[0]["steps"].item() == 4  # 48 images / (12 x 2) = 2 steps/epoch
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    assert not any(value.any() for key, value in ranks[0].items() if key.startswith("proxy_state/"))
