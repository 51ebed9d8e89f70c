"""Model cards for gsp_hub exports, built from the exported ``config.json`` alone.

An export's ``config.json`` carries a top-level ``"gsp_hub"`` block (timm ignores unknown top-level keys) with the
metrics, the dataset they were measured on, the training recipe and the card options. :func:`build_model_card` turns
that block plus timm's ``architecture`` / ``model_args`` / ``pretrained_cfg`` into a :class:`huggingface_hub.ModelCard`:
YAML metadata whose ``model-index`` lists every known metric as an ``EvalResult`` (R@k, MAP@R, R-precision, ...), and
a README body rendered from ``templates/model_card.md`` (details, results, usage snippets, recipe, BibTeX).

Card options (``card_extra`` of :func:`gsp_hub.hub.save_pretrained`) may also put the model beside its baselines
(``baselines``: name -> metrics on the same split; the card says in words whether the model beats each on both R@1
and MAP@R, with the numbers), state how much pooling weight lies on a collage's label tile (``target_mass``) and show
figures shipped in the export folder (``figures``: file + caption).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePath
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "CARD_OPTIONS",
    "CITATIONS",
    "DatasetRef",
    "MetricSpec",
    "baseline_rows",
    "build_model_card",
    "detect_methods",
    "eval_results",
    "metric_spec",
]

CARD_OPTIONS = ("base_model", "baselines", "description", "figures", "license", "methods", "model_name", "recipe",
                "selected_by", "tags", "target_mass")
COMPARED_METRICS = ("recall@1", "map@r")  # the metrics on which the card compares a model with its baselines
BASE_TAGS = ("gsp_hub", "timm", "metric-learning", "image-feature-extraction")
_RECALL_KEY = re.compile(r"^recall@(\d+)$")


@dataclass(frozen=True)
class DatasetRef:
    """The dataset (and split) on which an export's metrics were measured.

    id: Hub dataset id (``Donghyun99/CUB-200-2011``) or a short name (``fashion-mnist``); listed in the card's
        ``datasets``.
    split: evaluated split (``test``; for zero-shot splits say which classes in ``name``).
    name: human-readable name shown in the results, e.g. ``CUB-200-2011 (test classes 101-200)``; defaults to ``id``.
    config: dataset configuration name, if any.
    """

    id: str
    split: str = "test"
    name: str | None = None
    config: str | None = None

    def __post_init__(self) -> None:
        for field in ("id", "split"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"dataset {field} must be a non-empty string, got {value!r}.")

    @classmethod
    def coerce(cls, value: DatasetRef | Mapping[str, Any] | str) -> DatasetRef:
        """Accept a DatasetRef, a mapping with the same fields, or a bare dataset id (split ``test``)."""
        if isinstance(value, DatasetRef):
            return value
        if isinstance(value, str):
            return cls(id=value)
        if isinstance(value, Mapping):
            unknown = set(value) - {field.name for field in dataclasses.fields(cls)}
            if unknown or "id" not in value:
                raise ValueError(
                    f"dataset must have the keys id (required), split, name, config; got {sorted(value)}. "
                    "Example: dataset={'id': 'Donghyun99/CUB-200-2011', 'split': 'test'}."
                )
            return cls(**value)
        raise TypeError(f"dataset must be a DatasetRef, a mapping or a dataset id string, got {type(value).__name__}.")

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def to_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetricSpec:
    """How one gsp_hub metric key appears in the card's ``model-index``."""

    metric_type: str
    metric_name: str
    task_type: str
    metric_config: str | None = None


_FIXED_METRICS = {
    "map@r": MetricSpec("map_at_r", "MAP@R", "image-retrieval"),
    "r_precision": MetricSpec("r_precision", "R-Precision", "image-retrieval"),
    "nmi": MetricSpec("nmi", "NMI", "image-retrieval"),
    "top1": MetricSpec("accuracy", "Top-1 accuracy", "image-classification"),
    "top5": MetricSpec("accuracy", "Top-5 accuracy", "image-classification", "k=5"),
}


def metric_spec(key: str) -> MetricSpec | None:
    """The card entry of a metric key from :func:`gsp_hub.metrics.retrieval_metrics` (``recall@1``, ``map@r``,
    ``r_precision``, ``nmi``) or a classifier (``top1``, ``top5``); ``None`` for keys the card does not list."""
    match = _RECALL_KEY.match(key)
    if match:
        return MetricSpec("recall", f"R@{match.group(1)}", "image-retrieval", f"k={match.group(1)}")
    return _FIXED_METRICS.get(key)


def eval_results(metrics: Mapping[str, float], dataset: DatasetRef) -> list[EvalResult]:
    """One ``EvalResult`` per known metric key, in the order given (unknown keys are skipped)."""
    results = []
    for key, value in metrics.items():
        spec = metric_spec(key)
        if spec is None:
            continue
        results.append(
            EvalResult(
                task_type=spec.task_type,
                dataset_type=dataset.id,
                dataset_name=dataset.display_name,
                dataset_split=dataset.split,
                dataset_config=dataset.config,
                metric_type=spec.metric_type,
                metric_name=spec.metric_name,
                metric_config=spec.metric_config,
                metric_value=float(value),
            )
        )
    return results


# Method key -> (BibTeX, extra card tag). Sources: the headers of ../shared/spec/{gsp,xml,ccp,letkd,tm_block}.md.
CITATIONS: dict[str, str] = {
    "gsp": """@inproceedings{gurbuz2023gsp,
  title     = {Generalized Sum Pooling for Metric Learning},
  author    = {G{\\"u}rb{\\"u}z, Yeti Z. and {\\c{S}}ener, Ozan and Alatan, A. Ayd{\\i}n},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023},
  eprint    = {2308.09228},
  archivePrefix = {arXiv}
}""",
    "xml": """@inproceedings{gurbuz2023xml,
  title     = {Generalizable Embeddings with Cross-batch Metric Learning},
  author    = {G{\\"u}rb{\\"u}z, Yeti Z. and Alatan, A. Ayd{\\i}n},
  booktitle = {IEEE International Conference on Image Processing (ICIP)},
  year      = {2023},
  doi       = {10.1109/ICIP49359.2023.10222102},
  eprint    = {2307.07620},
  archivePrefix = {arXiv}
}""",
    "ccp": """@article{gurbuz2022ccp,
  title   = {Deep Metric Learning with Chance Constraints},
  author  = {G{\\"u}rb{\\"u}z, Yeti Z. and Can, O{\\u{g}}ul and Alatan, A. Ayd{\\i}n},
  journal = {arXiv preprint arXiv:2209.09060},
  year    = {2022}
}""",
    "letkd": """@inproceedings{gorgun2023letkd,
  title     = {Knowledge Distillation Layer that Lets the Student Decide},
  author    = {G{\\"o}rg{\\"u}n, Ada and G{\\"u}rb{\\"u}z, Yeti Z. and Alatan, A. Ayd{\\i}n},
  booktitle = {British Machine Vision Conference (BMVC)},
  year      = {2023},
  eprint    = {2309.02843},
  archivePrefix = {arXiv}
}""",
    "tm_block": """@inproceedings{gorgun2022tmblock,
  title     = {Feature Embedding by Template Matching as a ResNet Block},
  author    = {G{\\"o}rg{\\"u}n, Ada and G{\\"u}rb{\\"u}z, Yeti Z. and Alatan, A. Ayd{\\i}n},
  booktitle = {British Machine Vision Conference (BMVC)},
  year      = {2022},
  eprint    = {2210.00992},
  archivePrefix = {arXiv}
}""",
}
METHOD_TAGS = {
    "gsp": "generalized-sum-pooling",
    "xml": "cross-batch-metric-learning",
    "ccp": "chance-constraint-proxies",
    "letkd": "knowledge-distillation",
    "tm_block": "template-matching",
}
_METHOD_ALIASES = {"zsr": "gsp", "proto": "xml", "tm": "tm_block"}
_RECIPE_METHOD_FIELDS = ("loss", "method", "regularizer", "distill")


def detect_methods(pool: str | None, recipe: Mapping[str, Any] | None, explicit: Sequence[str] = ()) -> list[str]:
    """Method keys of :data:`CITATIONS` a model implements: the ``explicit`` ones, then those named by its pooling
    (``gsp`` -> GSP, ``proto`` -> XML) or by a word of the recipe's ``loss`` / ``method`` / ``regularizer`` /
    ``distill`` entries (``zsr`` -> GSP, ``xml``, ``ccp``, ``letkd``, ``tm_block``)."""
    unknown = [method for method in explicit if method not in CITATIONS]
    if unknown:
        raise ValueError(f"card_extra['methods'] has unknown method(s) {unknown}; known: {sorted(CITATIONS)}.")
    texts = [pool or ""] + [str((recipe or {}).get(field) or "") for field in _RECIPE_METHOD_FIELDS]
    words = [word for text in texts for word in re.split(r"[^a-z0-9_]+", text.lower())]
    implied = [_METHOD_ALIASES.get(word, word) for word in words]
    return list(dict.fromkeys([*explicit, *(method for method in implied if method in CITATIONS)]))


def baseline_rows(metrics: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]) -> list[dict[str, str]]:
    """The card's comparison with each baseline that has the :data:`COMPARED_METRICS` (as the model must): the
    baseline's values (%), the model's lead in points, and ``beats``: "yes" when the model is higher on every
    compared metric, else "no"."""
    if not all(key in metrics for key in COMPARED_METRICS):
        return []
    rows = []
    for name, values in baselines.items():
        if not all(key in values for key in COMPARED_METRICS):
            continue
        leads = [100 * (metrics[key] - values[key]) for key in COMPARED_METRICS]
        rows.append({
            "name": name,
            "values": [f"{100 * values[key]:.2f}" for key in COMPARED_METRICS],
            "leads": [f"{lead:+.2f}" for lead in leads],
            "beats": "yes" if all(lead > 0 for lead in leads) else "no",
        })
    return rows


def _model_reference(repo_id: str | None, location: str) -> dict[str, str]:
    """How each loader names the model: a Hub id when the export is for a repo, else its folder's name (the
    snippets run next to the folder; a card never names a local absolute path)."""
    if repo_id:
        return {"timm": f"hf-hub:{repo_id}", "gsp_hub": repo_id, "transformers": repo_id}
    folder = PurePath(location).name
    return {"timm": f"local-dir:{folder}", "gsp_hub": folder, "transformers": folder}


def _format_input(pretrained_cfg: Mapping[str, Any]) -> str:
    size = "x".join(str(v) for v in pretrained_cfg.get("input_size", ()))
    mean = ", ".join(f"{v:.3f}" for v in pretrained_cfg.get("mean", ()))
    std = ", ".join(f"{v:.3f}" for v in pretrained_cfg.get("std", ()))
    return (
        f"{size} ({pretrained_cfg.get('interpolation', '?')} resize, crop_pct {pretrained_cfg.get('crop_pct', '?')}), "
        f"mean ({mean}), std ({std})"
    )


def build_model_card(config: Mapping[str, Any], location: str) -> ModelCard:
    """The README of an export from its ``config.json`` content.

    Args:
        config: the export's config.json (timm fields + the ``"gsp_hub"`` metadata block).
        location: the export folder; its name is used in the usage snippets when the metadata names no ``repo_id``.
    """
    meta = config.get("gsp_hub")
    if not isinstance(meta, Mapping):
        raise ValueError("config has no 'gsp_hub' metadata block; write the export with gsp_hub.save_pretrained.")
    options: Mapping[str, Any] = meta.get("card") or {}
    metrics: Mapping[str, float] = meta.get("metrics") or {}
    dataset = DatasetRef.coerce(meta["dataset"]) if meta.get("dataset") else None
    repo_id = meta.get("repo_id")
    architecture = config["architecture"]
    model_name = options.get("model_name") or (repo_id.split("/")[-1] if repo_id else architecture)
    methods = list(meta.get("methods") or [])
    results = eval_results(metrics, dataset) if dataset else []
    num_classes = int(config.get("num_classes") or 0)
    tags = list(dict.fromkeys([*BASE_TAGS, *methods, *(METHOD_TAGS[m] for m in methods), *options.get("tags", [])]))

    card_data = ModelCardData(
        library_name="gsp_hub",
        license=options.get("license") or config.get("pretrained_cfg", {}).get("license"),
        base_model=options.get("base_model"),
        datasets=[dataset.id] if dataset else None,
        pipeline_tag="image-classification" if num_classes else "image-feature-extraction",
        tags=tags,
        metrics=list(dict.fromkeys(result.metric_type for result in results)) or None,
        model_name=model_name,
        eval_results=results or None,
    )
    recipe = options.get("recipe")
    baselines = baseline_rows(metrics, options.get("baselines") or {})
    template = resources.files("gsp_hub.hub").joinpath("templates/model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        description=options.get("description") or "",
        architecture=architecture,
        model_args=json.dumps(config.get("model_args", {}), sort_keys=True),
        backbone=meta.get("backbone"),
        pool=meta.get("pool"),
        embed_dim=meta.get("embed_dim") or config.get("num_features"),  # older exports lack embed_dim
        num_classes=num_classes,
        num_params=f"{meta['num_params'] / 1e6:.2f}M" if meta.get("num_params") else "?",
        input_description=_format_input(config.get("pretrained_cfg", {})),
        results=[
            {
                "metric": result.metric_name,
                "value": f"{100 * result.metric_value:.2f}" if math.isfinite(result.metric_value) else "n/a",
                "dataset": result.dataset_name,
                "split": result.dataset_split,
            }
            for result in results
        ],
        reference=_model_reference(repo_id, location),
        recipe=yaml.safe_dump(recipe, sort_keys=False).strip() if recipe else "",
        selected_by=options.get("selected_by") or "",
        split=dataset.split if dataset else "",
        compared=[metric_spec(key).metric_name for key in COMPARED_METRICS],
        model_values=[f"{100 * metrics[key]:.2f}" for key in COMPARED_METRICS] if baselines else [],
        baselines=baselines,
        target_mass=f"{options['target_mass']:.3f}" if options.get("target_mass") is not None else "",
        figures=options.get("figures") or [],
        citations=[CITATIONS[method] for method in methods],
        gsp_hub_version=meta.get("version", "?"),
    )
