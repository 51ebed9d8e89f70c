"""Every loss of gsp_hub. Metric learning, with the PML-like ``loss(embeddings, labels[, attributes])`` API: XML, CCP
(+ its re-initialisation schedule), ZSR, the shared ridge kernel, the base-loss registry (create_loss) and the GSP
loss combination. Distillation (:mod:`~gsp_hub.losses.distillation`): LeTKD, Hinton KD and the TM block's loss."""

from gsp_hub.losses.ccp import CCPLoss, c1_contrastive_loss, ccp_sizes, multi_proxy_anchor_loss, project_embeddings
from gsp_hub.losses.ccp_schedule import CCPSchedule, PlateauRule, group_by_class, reinit_proxies_, reset_optimizer_state_
from gsp_hub.losses.distillation import DistillLossOutput, HintonKDLoss, LeTKDLoss, dense_kl, hinton_kd, tm_loss
from gsp_hub.losses.ridge import class_disjoint_halves, cross_batch_ridge_ce, cross_predict, ridge_fit
from gsp_hub.losses.xml import SampleCrossBatchRegularizer, XMLLoss
from gsp_hub.losses.combined import GSPLoss, LossTerms
from gsp_hub.losses.registry import XBM, SumPerAnchorReducer, create_loss, list_losses, register_loss
from gsp_hub.losses.zsr import ZeroShotRegularizer

__all__ = [
    "CCPLoss",
    "CCPSchedule",
    "DistillLossOutput",
    "HintonKDLoss",
    "LeTKDLoss",
    "PlateauRule",
    "SampleCrossBatchRegularizer",
    "XMLLoss",
    "c1_contrastive_loss",
    "ccp_sizes",
    "class_disjoint_halves",
    "cross_batch_ridge_ce",
    "cross_predict",
    "dense_kl",
    "group_by_class",
    "hinton_kd",
    "multi_proxy_anchor_loss",
    "project_embeddings",
    "reinit_proxies_",
    "reset_optimizer_state_",
    "ridge_fit",
    "tm_loss",
    "GSPLoss",
    "LossTerms",
    "SumPerAnchorReducer",
    "XBM",
    "ZeroShotRegularizer",
    "create_loss",
    "list_losses",
    "register_loss",
]
