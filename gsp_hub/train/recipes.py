"""The papers' training recipes: named, versioned presets of :class:`~gsp_hub.train.config.TrainConfig` options.

``gsp-hub train --recipe NAME --dataset PREFIX:ROOT`` starts from a recipe, ``gsp-hub recipes`` lists them (``gsp-hub
recipes NAME`` adds its notes and options). Precedence: the config defaults < the recipe < ``--config`` YAML (or a
resumed run's saved config) < explicit flags, so any flag changes a recipe's value. In Python::

    get_recipe("gsp-pytorch-cub200").config(dataset="cub200:/data/CUB_200_2011", epochs=5)  # a TrainConfig

Four families, each for the four benchmarks of :mod:`gsp_hub.data.dml_benchmarks` (``cub200``, ``cars196``,
``sop``, ``inshop``; In-shop's queries search its gallery):

* ``gsp-pytorch-*``: GSP + ZSR as the official PyTorch configs ran it (ResNet-50, 512-d, 32 classes x 4 images);
* ``gsp-mlrc-*``: GSP + ZSR + XBM + C1, the GSP paper's headline runs, on the MLRC protocol;
* ``ccp-mlrc-*``: C1-CCP (chance-constraint proxies, C1 in both terms) on the MLRC protocol;
* ``xml-mlrc-*``: XML (cross-batch prototype loss, a reconstruction) on the MLRC protocol.

A recipe sets every option it depends on, not only those that differ from today's defaults, so that it keeps
meaning what its version says when a default changes; changing its values means a new version. The data set is left
to the user, since a benchmark's folder differs by machine (without one, the error names the ``--dataset`` form the
recipe expects). Each recipe names its source in the specs (``shared/spec``) and, in its notes, its substitutions
(timm has no BN-Inception) and every part of the paper's setup that gsp_hub approximates. This module imports only
the config, so that listing the recipes stays instant.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gsp_hub.registry import did_you_mean
from gsp_hub.train.config import TrainConfig

__all__ = ["RECIPES", "Benchmark", "Recipe", "get_recipe", "list_recipes"]


@dataclass(frozen=True)
class Benchmark:
    """A DML benchmark as ``--dataset PREFIX:ROOT`` names it (:data:`gsp_hub.data.dml_benchmarks.DML_BENCHMARKS`);
    ``folder`` is the ROOT its official release unpacks to; ``query_gallery``: tested by its queries searching its
    gallery (In-shop), else leave-one-out."""

    prefix: str
    title: str
    folder: str
    query_gallery: bool = False

    @property
    def dataset_form(self) -> str:
        """``cub200:/path/to/CUB_200_2011``: the ``--dataset`` value a recipe of this benchmark expects."""
        return f"{self.prefix}:/path/to/{self.folder}"

    def test_options(self) -> dict[str, str | None]:
        """The :class:`TrainConfig` options of the benchmark's test protocol (``query_split``, ``gallery_split``)."""
        if self.query_gallery:
            return {"query_split": "query", "gallery_split": "gallery"}
        return {"query_split": None, "gallery_split": None}


_BENCHMARKS = (
    Benchmark("cub200", "CUB-200-2011", "CUB_200_2011"),
    Benchmark("cars196", "Cars196", "cars196"),
    Benchmark("sop", "Stanford Online Products", "Stanford_Online_Products"),
    Benchmark("inshop", "In-shop Clothes Retrieval", "In-shop", query_gallery=True),
)


@dataclass(frozen=True)
class Recipe:
    """A named, versioned set of training options for one benchmark.

    ``trains`` says in one line what it trains, ``source`` where its values come from (spec file and section),
    ``notes`` its substitutions and approximations; ``options`` are :class:`TrainConfig` options, without ``dataset``.
    """

    name: str
    version: int
    benchmark: Benchmark
    trains: str
    source: str
    notes: str
    options: Mapping[str, Any]

    def config(self, **given: Any) -> TrainConfig:
        """The recipe's :class:`TrainConfig` with the ``given`` options over its own; ``dataset`` must be among them
        (ValueError naming the form this recipe expects)."""
        if "dataset" not in given:
            raise ValueError(f"recipe {self.name!r} trains on {self.benchmark.title} but cannot know where it is: pass "
                             f"--dataset {self.benchmark.dataset_form} (dataset= in Python), the folder its official "
                             "release unpacks to, or another data set to train on with this recipe.")
        return TrainConfig.from_dict({**copy.deepcopy(dict(self.options)), **given})


# ----------------------------------------------------------------------------------------------- shared settings
# ResNet-50 with torchvision's ImageNet weights (those the official PyTorch GSP code starts from) at output stride 32
# (an 8x8 map at 227 px); evaluation resizes to 256 (= 227 / crop_pct) and crops the centre 227 px.
_RESNET50_227 = dict(model="metric_net", backbone="resnet50.tv_in1k", pretrained=True,
                     backbone_kwargs={"output_stride": 32}, img_size=227, crop_pct=227 / 256, augment=True,
                     split_protocol="zero-shot", m_per_class=4, warmup_steps=0, loss_lr_scale=1.0, eval_every=1)
_GSP_POOL = dict(transport_ratio=0.3, gamma=5.0, memory_size=1024)  # gsp.md §9, gsp_hub column (μ, γ, memory)
# gsp.md §7-8; the TF framework's He-normal class embeddings
_ZSR = dict(zsr_weight=0.1, zsr_kwargs={"ridge": 0.05, "scale": 9.5, "margin": 0.0, "class_embedding_init": "he"})
_C1 = {"pos_margin": 1.0, "neg_margin": 0.5}  # gsp.md §8: XBM's contrastive loss on cosine similarity
_GSP_PROTOTYPES = {"cub200": 64, "cars196": 64, "sop": 128, "inshop": 128}  # gsp.md §9: K, 64 below 1,000 classes

# ------------------------------------------------------------------------------------------ GSP, PyTorch configs
# (config name, lr, weight decay, epochs) of yetigurbuz/generalized-sum-pooling's
# pytorch/intra_batch_framework/config/config_<name>_train.yaml (lr and epochs as issue 22 quotes them).
_GSP_PYTORCH = {"cub200": ("cub", 1.564e-5, 6.060e-6, 70), "cars196": ("cars", 3.668e-5, 2.552e-9, 30),
                "sop": ("sop", 2.472e-4, 2.765e-13, 70), "inshop": ("inshop", 1.127e-4, 1.055e-7, 70)}
_GSP_PYTORCH_NOTES = (
    "Kept from the official PyTorch configs: ResNet-50 at output stride 32 (last_stride 0), 512-d, 32 classes x 4 "
    "images, the data set's learning rate, weight decay and epochs, GSP with K = {K} and transport ratio 0.3, ZSR "
    "weight 0.1, training transform random resized crop 227 px + flip + random erasing (p 0.5), evaluation resize "
    "256 + centre crop 227. Approximated: the official runs fine-tune Intra-Batch DML checkpoints with classifier and "
    "GNN label-smoothed cross-entropy (ZSR added to them) under RAdam with a x0.1 learning-rate step at epoch 6; here "
    "ResNet-50 with the torchvision ImageNet weights the official code loads (timm resnet50.tv_in1k) trains with "
    "multi-similarity and ZSR as 0.9 base + 0.1 ZSR, under AdamW with a cosine schedule. GSP gamma 5, k-center "
    "initialisation from a memory of 1,024 pooled embeddings and the weighted average of the embedded map (gsp_hub's "
    "GSP) instead of the PyTorch layer's gamma 0.1 (nearly uniform transport, gsp.md §9), classifier-row "
    "initialisation and weighted max pooling. timm's random erasing (2-33 % of the area, zero fill) instead of the "
    "official one (2-40 %, mean fill). No validation classes: the official configs (val: 0) pick the epoch on the "
    "test split, which is not copied; the last model is kept.{extra}"
)
_GSP_PYTORCH_EXTRA = {"cars196": " The official Cars196 run freezes the backbone (freeze_backbone); gsp_hub has no "
                                 "such option, so the whole network trains."}


def _gsp_pytorch(benchmark: Benchmark) -> Recipe:
    """GSP + ZSR with the official PyTorch configs' hyperparameters for ``benchmark``."""
    config_name, lr, weight_decay, epochs = _GSP_PYTORCH[benchmark.prefix]
    prototypes = _GSP_PROTOTYPES[benchmark.prefix]
    name = f"gsp-pytorch-{benchmark.prefix}"
    return Recipe(
        name=name, version=1, benchmark=benchmark,
        trains=f"GSP (K {prototypes}) + ZSR, ResNet-50, 512-d, batch 32x4, {epochs} epochs: the official PyTorch port",
        source=f"shared/spec/gsp.md §8-9 (PyTorch column); the official config_{config_name}_train.yaml",
        notes=_GSP_PYTORCH_NOTES.format(K=prototypes, extra=_GSP_PYTORCH_EXTRA.get(benchmark.prefix, "")),
        options=dict(
            _RESNET50_227, **_ZSR, **benchmark.test_options(), embed_dim=512, pool="gsp",
            pool_kwargs=dict(num_prototypes=prototypes, **_GSP_POOL),
            loss="ms", loss_kwargs={"alpha": 2.0, "beta": 50.0, "base": 0.5},
            augment_kwargs={"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3], "hflip": 0.5, "color_jitter": None,
                            "re_prob": 0.5},
            batch_size=128, lr=lr, weight_decay=weight_decay, scheduler="cosine", epochs=epochs,
            validation_fraction=0.0, output_dir=f"runs/{name}",
        ),
    )


# ---------------------------------------------------------------------------------------------- MLRC protocol
# gsp.md §8: 227 px, 128-d, 8 classes x 4 images, Adam 1e-5, weight decay 1e-4, a constant learning rate; one fold of
# the 4-fold class split validates. The protocol stops early and gives no epoch count: these budgets cover the
# longest runs ccp.md §5 reports (about 130K steps on SOP and In-shop).
_MLRC = dict(_RESNET50_227, embed_dim=128, batch_size=32, lr=1e-5, weight_decay=1e-4, scheduler="constant",
             validation_fraction=0.25,
             augment_kwargs={"scale": [(40 / 256) ** 2, 1.0], "ratio": [0.75, 4 / 3], "hflip": 0.5,
                             "color_jitter": None})
_MLRC_EPOCHS = {"cub200": 100, "cars196": 100, "sop": 100, "inshop": 220}
_MLRC_NOTES = (
    "MLRC protocol (gsp.md §8): 227-px crops, 128-d, batches of 8 classes x 4 images, lr 1e-5, weight decay 1e-4, "
    "constant learning rate. Substitute: timm has no BN-Inception, so the backbone is ResNet-50 (timm "
    "resnet50.tv_in1k, ImageNet) at output stride 32 (an 8x8 x 2048 map at 227 px; BN-Inception's is 7x7 x 1024): "
    "results are not comparable with the papers' BN-Inception tables. Approximated: one model, validated on one "
    "class fold (the last quarter of the training classes, validation_fraction 0.25), instead of the mean and the "
    "concatenation of the 4 fold models; evaluation every epoch instead of every 25 (CUB, Cars) / 250 (SOP, In-shop) "
    "steps; {epochs} epochs keeping the best-validation model instead of early stopping after 60 evaluations "
    "without improvement (the protocol gives no epoch count; SOP and In-shop runs take up to about 130K steps, "
    "ccp.md §5); AdamW (decoupled weight decay, betas 0.9 / 0.999) instead of Adam (betas 0.9 / 0.99); the random "
    "resized crop's 40-256 px of a 256-px short side as the area fraction (40/256)^2 to 1, then a flip (timm's "
    "colour jitter off)."
)


def _mlrc(benchmark: Benchmark, method: str, *, trains: str, source: str, notes: str, **options: Any) -> Recipe:
    """A ``method`` recipe for ``benchmark`` on the MLRC protocol with the method's own ``options``."""
    name = f"{method}-mlrc-{benchmark.prefix}"
    epochs = _MLRC_EPOCHS[benchmark.prefix]
    return Recipe(
        name=name, version=1, benchmark=benchmark, trains=f"{trains}, {epochs} epochs", source=source,
        notes=f"{notes} {_MLRC_NOTES.format(epochs=epochs)}",
        options=dict(_MLRC, **benchmark.test_options(), **options, epochs=epochs, output_dir=f"runs/{name}"),
    )


# gsp.md §8: XBM memory of 25 (CUB, Cars), 1,400 (SOP) and 400 (In-shop) batches of 32.
_XBM_BATCHES = {"cub200": 25, "cars196": 25, "sop": 1400, "inshop": 400}


def _gsp_mlrc(benchmark: Benchmark) -> Recipe:
    """The GSP paper's headline runs: GSP + ZSR (0.1) + XBM + C1 on the MLRC protocol."""
    prototypes, batches = _GSP_PROTOTYPES[benchmark.prefix], _XBM_BATCHES[benchmark.prefix]
    return _mlrc(
        benchmark, "gsp", trains=f"GSP (K {prototypes}) + ZSR + XBM ({batches} batches) + C1, 128-d, MLRC protocol",
        source="shared/spec/gsp.md §8 (headline TF runs, MLRC), §9 (TF yaml column)",
        notes="The official runs start XBM after 1,000 steps plus the memory fill; here the memory is used from the "
              "first step.",
        pool="gsp", pool_kwargs=dict(num_prototypes=prototypes, **_GSP_POOL), **_ZSR,
        loss="xbm", loss_kwargs=dict(base="contrastive", memory_size=32 * batches, **_C1),
    )


# ccp.md §4: proxies per class P and candidate pool b per class, dml_small (CUB, Cars) / dml_large (SOP, In-shop).
_CCP_SIZES = {"cub200": (8, 12), "cars196": (8, 12), "sop": (4, 7), "inshop": (4, 7)}


def _ccp_mlrc(benchmark: Benchmark) -> Recipe:
    """C1-CCP (chance-constraint proxies) with the official projection schedule on the MLRC protocol."""
    proxies, pool_size = _CCP_SIZES[benchmark.prefix]
    return _mlrc(
        benchmark, "ccp", trains=f"C1-CCP ({proxies} proxies per class, pool {pool_size}), GAP, 128-d, MLRC protocol",
        source="shared/spec/ccp.md §2-4 (schedule, loss, hyperparameters), gsp.md §8 (MLRC protocol)",
        notes="As the official code: C1 in the proxy and the in-batch term (weights 1 and 0.1), embeddings and "
              "proxies in the unit ball, lambda 2e-4, patience 3, k-center on raw embeddings, the best weights only "
              "anchor the proximal term (not restored). The plateau rule counts evaluations, here one per epoch, so "
              "projections come less often than after 3 x 25 (or 250) steps.",
        pool="avg", pool_kwargs={}, zsr_weight=0.0,
        loss="ccp", loss_kwargs=dict(proxies_per_class=proxies, proxy_loss="c1", proxy_weight=1.0, pair_weight=0.1,
                                     normalization="unit_ball"),
        ccp_kwargs=dict(pool_size=pool_size, patience=3, min_delta=1e-5, lam=2e-4, lam_decay=1.0,
                        restore_best_weights=False, kcenter_space="raw"),
    )


def _xml_mlrc(benchmark: Benchmark) -> Recipe:
    """XML (cross-batch prototype loss around C1) on the MLRC protocol, as shared/spec/xml.md reconstructs it."""
    return _mlrc(
        benchmark, "xml", trains="XML (32 soft-assignment prototypes) around C1, 128-d, MLRC protocol",
        source="shared/spec/xml.md §2-5 (a reconstruction: no official code), gsp.md §8 (MLRC protocol)",
        notes="XML is reconstructed from its abstract and the authors' framework (xml.md §9 lists what is open); "
              "its base loss is not known: C1, the framework's pair loss.",
        pool="proto", pool_kwargs={"num_prototypes": 32, "scale": 10.0},
        loss="xml+contrastive", loss_kwargs=dict(_C1),
        xml_kwargs=dict(weight=0.1, ridge=0.05, scale=9.5, margin=0.0, target="class_embeddings", convex=True),
    )


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for family in (_gsp_pytorch, _gsp_mlrc, _ccp_mlrc, _xml_mlrc)
    for recipe in map(family, _BENCHMARKS)
}


def list_recipes() -> list[Recipe]:
    """Every recipe, by family then benchmark."""
    return list(RECIPES.values())


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name raises ValueError with the close names and all of them."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}{did_you_mean(name, RECIPES)}; the recipes are "
                         f"{', '.join(RECIPES)} (`gsp-hub recipes` describes them).")
    return RECIPES[name]
