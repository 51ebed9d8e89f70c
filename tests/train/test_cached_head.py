"""The cached-head task (the zoo recipe) through the one engine: exact resume, export and reload, early errors; the
map cache and the recipe variants of the zoo scripts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gsp_hub
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.layers import GSP
from gsp_hub.train import Trainer
from gsp_hub.train.callbacks import BatchOutputs, Callback
from gsp_hub.train.cached_head import (
    CachedHeadConfig,
    CachedHeadNetwork,
    CachedHeadTask,
    FeatureSplit,
    build_model,
    evaluate_cached,
    train_cached_head,
)
from gsp_hub.train.data import eval_loader
from gsp_hub.train.feature_cache import cache_maps, load_cache
from gsp_hub.train.head_experiments import Variant


def cached_maps(first_class: int, classes: int, per_class: int, shape: tuple[int, ...], seed: int) -> FeatureSplit:
    """Random fp16 maps (M, *shape) with a weak class signal, labels first_class.. (per_class rows each)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(first_class, first_class + classes).repeat_interleave(per_class)
    centres = torch.randn(first_class + classes, *shape, generator=generator)
    return FeatureSplit((0.5 * centres[labels] + torch.randn(len(labels), *shape, generator=generator)).half(), labels)


def splits(shape: tuple[int, ...]) -> dict[str, FeatureSplit]:
    """4 train classes x 8 maps (4 steps of 2 classes x 4 per epoch), 2 validation and 3 test classes x 5 maps."""
    return {"train": cached_maps(0, 4, 8, shape, seed=0), "validation": cached_maps(4, 2, 5, shape, seed=1),
            "test": cached_maps(6, 3, 5, shape, seed=2)}


def tiny_config(output_dir: Path, **overrides: Any) -> CachedHeadConfig:
    """The recipe on a randomly initialised Lite0 at a tiny scale: 16-d embedding, 4 prototypes, batches of 8."""
    values: dict[str, Any] = dict(output_dir=str(output_dir), backbone_weights="random", embed_dim=16,
                                  num_prototypes=4, batch_size=8, m_per_class=4, epochs=2, lr=1e-3, img_size=64)
    return CachedHeadConfig(**{**values, **overrides})


def run(config: CachedHeadConfig, data: dict[str, FeatureSplit]) -> Trainer:
    trainer = Trainer(CachedHeadTask(config, data["train"], data["test"], data["validation"]))
    trainer.run()
    return trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The model's weights and buffers and the loss's state (ZSR class embeddings)."""
    state = {f"model/{key}": value for key, value in trainer.task.model.state_dict().items()}
    return {**state, **{f"loss/{key}": value for key, value in trainer.task.loss_fn.state_dict().items()}}


def test_stop_and_resume_mid_epoch_is_bit_exact_with_backbone_finetuning(tmp_path):
    # Maps cached at the input of Lite0's last block (192 x 2 x 2): block 6, conv_head and bn2 train with the head.
    data = splits((192, 2, 2))
    straight = run(tiny_config(tmp_path / "straight", finetune_from_block=6), data)
    stopped_config = tiny_config(tmp_path / "resumed", finetune_from_block=6, max_steps=3)
    stopped = run(stopped_config, data)
    assert stopped.state.step == 3 and stopped.state.batch_in_epoch == 3  # mid-epoch
    at_stop = weights(stopped)
    resumed = run(dataclasses.replace(stopped_config, resume="latest", max_steps=0), data)
    assert resumed.state.step == straight.state.step == 8

    expected, result = weights(straight), weights(resumed)
    assert expected.keys() == result.keys() and "loss/regularizer.class_embeddings" in expected
    for key in expected:
        assert torch.equal(expected[key], result[key]), key
    changed = {key for key in expected if not torch.equal(expected[key], at_stop[key])}
    assert {"model/pool.prototypes", "model/embed.weight", "model/backbone.conv_head.weight",
            "model/backbone.blocks.6.0.conv_pw.weight"} <= changed  # it trained on after the stop
    assert not any(key.startswith(("model/backbone.blocks.5", "model/backbone.conv_stem")) for key in changed)
    assert "model/backbone.bn2.running_mean" not in changed  # frozen BatchNorm statistics


def test_exported_head_reloads_and_reproduces_the_test_metrics(tmp_path):
    data = splits((4, 1280))  # final maps: 4 locations of 1280 channels
    summary = train_cached_head(tiny_config(tmp_path / "run", epochs=1), data["train"], data["test"],
                                data["validation"])
    assert summary["selected_by"] == "the best validation map@r (classes 4-5)"
    assert summary["splits"] == {"train": "classes 0-3", "validation": "classes 4-5", "test": "classes 6-8"}

    model = gsp_hub.load_model(summary["model_dir"])  # the tin200-tagged architecture, head on its backbone
    assert model.pretrained_cfg["tag"] == "tin200" and model.embed.out_features == 16
    metrics = evaluate_cached(CachedHeadNetwork(model), eval_loader(data["test"], batch_size=6, num_workers=0))
    best = summary["best"]
    assert 0 < best["map@r"] < 1
    for key in ("recall@1", "map@r", "r_precision", "effective_locations"):
        assert metrics[key] == pytest.approx(best[key], abs=1e-6), key
    assert 1 < metrics["effective_locations"] < 4  # GSP pools part of the 4 locations


def test_cached_head_errors_come_before_any_work(tmp_path):
    data = splits((4, 1280))
    with pytest.raises(ValueError, match="finetune_from_block=5 needs \\(M, C, h, w\\) maps"):
        train_cached_head(tiny_config(tmp_path / "a", finetune_from_block=5), data["train"], data["test"])
    single = FeatureSplit(data["test"].features[:11], data["test"].labels[:11])  # class 8 has one map
    with pytest.raises(ValueError, match="test split has 1 class\\(es\\) with a single image.*class 8"):
        train_cached_head(tiny_config(tmp_path / "b"), data["train"], single)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="batch_size=12 must be a multiple of m_per_class=8"):
        tiny_config(tmp_path / "c", batch_size=12, m_per_class=8)
    with pytest.raises(ValueError, match="labels must be \\(M,\\) integer class ids"):
        FeatureSplit(torch.zeros(3, 4, 8), torch.zeros(3))


def test_cached_block_input_maps_continue_to_the_cached_final_maps(tmp_path):
    # The ImageNet Lite0 (installed package) over 3 real images at 32 px: final maps (3, 1, 1280), and the input of
    # block 6 (3, 192, 1, 1), which the fine-tuning network runs through blocks 6.., conv_head and bn2.
    images = load_fashion_mnist_subset()["train"].select(range(5))
    rows = np.array([4, 0, 2])
    final = load_cache(cache_maps(images, rows, tmp_path / "final", 32, None))
    block_input = load_cache(cache_maps(images, rows, tmp_path / "block6", 32, None, from_block=6))
    assert final.features.shape == (3, 1, 1280) and final.features.dtype == torch.float16
    assert block_input.features.shape == (3, 192, 1, 1)
    assert final.labels.tolist() == block_input.labels.tolist() == [images[int(i)]["label"] for i in rows]
    network = CachedHeadNetwork(build_model(CachedHeadConfig(output_dir=str(tmp_path), finetune_from_block=6)), 6)
    assert network.training and not network.model.backbone.training  # frozen BatchNorm statistics from the start
    with torch.no_grad():
        continued = network.local_features(block_input.features)
    torch.testing.assert_close(continued, final.features.float(), atol=0.02, rtol=0.01)  # fp16 caches


def test_variants_override_the_base_recipe(tmp_path):
    variant = Variant.parse("gsp+zsr:pool=gsp,zsr_weight=0.3,gamma=20")
    config = variant.config(tiny_config(tmp_path / "base", pool="avg"), seed=3, output_dir=tmp_path / "runs")
    assert (config.pool, config.zsr_weight, config.gamma, config.seed, config.embed_dim) == ("gsp", 0.3, 20.0, 3, 16)
    assert config.output_dir == str(tmp_path / "runs")
    with pytest.raises(ValueError, match="unknown \\['gama'\\]"):
        Variant.parse("g:gama=20")
    with pytest.raises(ValueError, match="could not convert"):
        Variant.parse("g:gamma=high")
    with pytest.raises(ValueError, match="zsr_weight must be"):
        Variant.parse("g:zsr_weight=2").config(config, seed=0, output_dir=tmp_path)


def test_official_gsp_options_reach_the_pool_the_regulariser_and_the_export(tmp_path):
    variant = Variant.parse("gmp+max:pool=gsp,gsp_head=gmp,add_max_pool=TRUE,zsr_class_embedding_init=unit")
    config = variant.config(tiny_config(tmp_path / "base", epochs=1), seed=0, output_dir=tmp_path / "run")
    data = splits((4, 1280))
    task = CachedHeadTask(config, data["train"], data["test"], data["validation"])
    summary = Trainer(task).run()
    assert task.loss_fn.regularizer.class_embedding_init == "unit"
    model = gsp_hub.load_model(summary["model_dir"])
    assert (model.pool.head, model.pool.add_max_pool) == ("gmp", True)
    assert Variant.parse("g:add_max_pool=false").overrides == {"add_max_pool": False}
    with pytest.raises(ValueError, match="expected true or false, got 'yes'"):
        Variant.parse("g:add_max_pool=yes")


def test_weights_kcenter_picks_the_prototypes_among_the_proxies_after_the_warm_up(tmp_path):
    """gsp_init='weights_kcenter' with proxy-anchor (4 classes, 4 prototypes, warm-up 16 maps = 2 steps of 8): the
    prototypes are set once, right after step 2, to the k-center picks among the proxies of that moment; the
    proxies learn at lr * loss_lr_scale."""
    config = tiny_config(tmp_path / "run", epochs=1, loss="proxy_anchor", zsr_weight=0.1, gsp_memory_size=16,
                         gsp_init="weights_kcenter", loss_lr_scale=100.0)
    data = splits((4, 1280))
    task = CachedHeadTask(config, data["train"], data["test"], data["validation"])

    class Spy(Callback):
        """Records each step's initialised flag and the proxies and prototypes after the initialising step."""

        def __init__(self) -> None:
            self.initialised: list[bool] = []

        def on_train_batch(self, outputs: BatchOutputs) -> None:
            self.initialised.append(bool(task.model.pool.initialized))
            if self.initialised == [False, True]:
                self.proxies = task.loss_fn.class_weights.detach().clone()
                self.prototypes = task.model.pool.prototypes.detach().clone()

    spy = Spy()
    trainer = Trainer(task, [spy])
    loss_lr = {group["lr"] for group in trainer.optimizer.optimizer.param_groups
               if any(p is task.loss_fn.class_weights for p in group["params"])}
    assert loss_lr == {config.lr * 100.0}
    trainer.run()
    assert spy.initialised == [False, True, True, True]
    expected = GSP(16, num_prototypes=4, memory_size=1, init="weights_kcenter")
    expected.init_prototypes_from_weights_(spy.proxies)
    torch.testing.assert_close(spy.prototypes, expected.prototypes.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"loss": "ms"}, "loss='ms' has none; use loss='proxy_anchor' or gsp_init='memory_kcenter'"),
    ({"loss": "proxy_anchor", "num_prototypes": 5}, "num_prototypes = 5 rows"),
])
def test_weights_kcenter_without_enough_proxies_fails_before_training(tmp_path, overrides, message):
    config = tiny_config(tmp_path / "run", gsp_init="weights_kcenter", gsp_memory_size=8, **overrides)
    data = splits((4, 1280))
    with pytest.raises(ValueError, match=re.escape(message)):
        Trainer(CachedHeadTask(config, data["train"], data["test"], data["validation"]))
    assert not (tmp_path / "run" / "metrics.json").exists()
