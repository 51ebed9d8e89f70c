"""Knowledge distillation's offline step: the LeTKD teacher targets, fitted once from a frozen teacher.

* :mod:`gsp_hub.kd.targets` — offline teacher supervision (k-means codebook, LDA sub-class decisions), as buffers
  saved to / loaded from safetensors.

The other parts of LeTKD live with their kind: the layers in :mod:`gsp_hub.layers.letkd` (:class:`LeTKDLayer`) and
:mod:`gsp_hub.layers.tm_block` (:class:`TMBlock`), the tapped student / teacher in :mod:`gsp_hub.models.taps`, the
losses in :mod:`gsp_hub.losses.distillation`. One letKD-2 training step (CIFAR-10, ResNet-56 teacher -> ResNet-20
student)::

    from gsp_hub.kd import LeTKDTargets, collect_teacher_locations
    from gsp_hub.losses import LeTKDLoss
    from gsp_hub.models.taps import TeacherTaps, insert_letkd_layers

    student = insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), inter_codes=10 * 8)
    teacher = TeacherTaps(teacher_model, grid_sizes=student.grid_sizes)
    targets = LeTKDTargets.fit(collect_teacher_locations(teacher, plain_loader), num_classes=10)  # once; .save()
    criterion = LeTKDLoss(targets)
    logits, tap_logits = student(images, return_tap_logits=True)
    out = criterion(logits, labels, tap_logits, teacher(images).maps)
    out.loss.backward()                                  # out.parts: ce, kl_*, template_acc_* for logging

At inference the student is ``student(images)``: no teacher, no labels.
"""

from gsp_hub.kd.targets import (
    DecisionTargets,
    LeTKDTargets,
    LocationFeatures,
    PenultimateCodebook,
    collect_teacher_locations,
)

__all__ = [
    "DecisionTargets",
    "LeTKDTargets",
    "LocationFeatures",
    "PenultimateCodebook",
    "collect_teacher_locations",
]
