"""Losses with the PML-like ``loss(embeddings, labels[, attributes])`` API: XML, CCP, ZSR, the shared ridge kernel, the
base-loss registry (create_loss) and the GSP loss combination."""

from gsp_hub.losses.ccp import CCPLoss, c1_contrastive_loss, ccp_sizes, multi_proxy_anchor_loss, project_embeddings
from gsp_hub.losses.ccp_schedule import CCPSchedule, PlateauRule, group_by_class, reinit_proxies_, reset_optimizer_state_
from gsp_hub.losses.ridge import class_disjoint_halves, cross_batch_ridge_ce, cross_predict, ridge_fit
from gsp_hub.losses.xml import SampleCrossBatchRegularizer, XMLLoss
from gsp_hub.losses.combined import GSPLoss, LossTerms
from gsp_hub.losses.registry import XBM, SumPerAnchorReducer, create_loss, list_losses, register_loss
from gsp_hub.losses.zsr import ZeroShotRegularizer

__all__ = [
    "CCPLoss",
    "CCPSchedule",
    "PlateauRule",
    "SampleCrossBatchRegularizer",
    "XMLLoss",
    "c1_contrastive_loss",
    "ccp_sizes",
    "class_disjoint_halves",
    "cross_batch_ridge_ce",
    "cross_predict",
    "group_by_class",
    "multi_proxy_anchor_loss",
    "project_embeddings",
    "reinit_proxies_",
    "reset_optimizer_state_",
    "ridge_fit",
    "GSPLoss",
    "LossTerms",
    "SumPerAnchorReducer",
    "XBM",
    "ZeroShotRegularizer",
    "create_loss",
    "list_losses",
    "register_loss",
]
