"""Knowledge distillation with LeTKD layers and the template-matching (TM) block, on any timm teacher and student.

* :mod:`gsp_hub.kd.layer` — :class:`CosineConv1x1`, :class:`LeTKDLayer` (x + alpha * value(relu(bn(match(x))))).
* :mod:`gsp_hub.kd.taps` — tap points (penultimate map, first block of the last stage) of any timm model;
  :class:`TappedModel` / :func:`letkd_student` insert layers into a student; :class:`TeacherTaps` reads a frozen
  teacher.
* :mod:`gsp_hub.kd.targets` — offline teacher supervision (k-means codebook, LDA sub-class decisions), as buffers
  saved to / loaded from safetensors.
* :mod:`gsp_hub.kd.losses` — :class:`LeTKDLoss` (CE + dense KL per tap), :class:`HintonKDLoss` (T = 4).
* :mod:`gsp_hub.kd.tm_block` — :class:`TMBlock`, :func:`tm_student`, :func:`tm_loss` (a reconstruction; its
  inferred choices are documented options).

One letKD-2 training step (CIFAR-10, ResNet-56 teacher -> ResNet-20 student)::

    student = letkd_student(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), inter_codes=10 * 8)
    teacher = TeacherTaps(teacher_model, grid_sizes=student.grid_sizes)
    targets = LeTKDTargets.fit(collect_teacher_locations(teacher, plain_loader), num_classes=10)  # once; .save()
    criterion = LeTKDLoss(targets)
    logits, tap_logits = student(images, return_tap_logits=True)
    out = criterion(logits, labels, tap_logits, teacher(images).maps)
    out.loss.backward()                                  # out.parts: ce, kl_*, template_acc_* for logging

At inference the student is ``student(images)``: no teacher, no labels.
"""

from gsp_hub.kd.layer import CosineConv1x1, LeTKDLayer
from gsp_hub.kd.losses import DistillLossOutput, HintonKDLoss, LeTKDLoss, dense_kl, hinton_kd
from gsp_hub.kd.targets import (
    DecisionTargets,
    LeTKDTargets,
    LocationFeatures,
    PenultimateCodebook,
    collect_teacher_locations,
)
from gsp_hub.kd.taps import (
    INTERMEDIATE,
    PENULTIMATE,
    KDTap,
    TapInfo,
    TappedModel,
    TeacherOutput,
    TeacherTaps,
    flatten_locations,
    letkd_student,
    match_grid,
    resolve_intermediate_module,
)
from gsp_hub.kd.tm_block import TMBlock, tm_loss, tm_student

__all__ = [
    "INTERMEDIATE",
    "PENULTIMATE",
    "CosineConv1x1",
    "DecisionTargets",
    "DistillLossOutput",
    "HintonKDLoss",
    "KDTap",
    "LeTKDLayer",
    "LeTKDLoss",
    "LeTKDTargets",
    "LocationFeatures",
    "PenultimateCodebook",
    "TMBlock",
    "TapInfo",
    "TappedModel",
    "TeacherOutput",
    "TeacherTaps",
    "collect_teacher_locations",
    "dense_kl",
    "flatten_locations",
    "hinton_kd",
    "letkd_student",
    "match_grid",
    "resolve_intermediate_module",
    "tm_loss",
    "tm_student",
]
