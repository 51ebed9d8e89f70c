"""LeTKD layers inserted into timm students, and read-only teacher taps."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import gsp_hub.models.cifar_resnet  # noqa: F401  (registers cifar_resnet*)
from gsp_hub.models.taps import (
    INTERMEDIATE,
    PENULTIMATE,
    TeacherTaps,
    insert_letkd_layers,
    match_grid,
    resolve_intermediate_module,
)


@pytest.mark.parametrize(
    "name, kwargs, input_size, inter_module",
    [
        ("cifar_resnet20", {}, (3, 32, 32), "layer3.0"),
        ("resnet18", {}, (3, 64, 64), "layer4.0"),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}, (3, 32, 32), "blocks.11"),
    ],
)
def test_insertion_keeps_shapes_and_alpha_zero_keeps_logits(name, kwargs, input_size, inter_module) -> None:
    torch.manual_seed(0)
    bare = timm.create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, *input_size)
    with torch.no_grad():
        expected = bare(x)
    assert resolve_intermediate_module(bare) == inter_module
    frozen = insert_letkd_layers(copy.deepcopy(bare), input_size=input_size, pen_codes=32, inter_codes=20,
                                 alpha_pen=0.0, alpha_inter=0.0).eval()
    with torch.no_grad():
        logits, tap_logits = frozen(x, return_tap_logits=True)
    assert torch.equal(logits, expected)  # bit-identical: the wrapper and tap plumbing change nothing
    grid = frozen.grid_sizes[PENULTIMATE]
    assert tap_logits[PENULTIMATE].shape == (2, 32, *grid)
    assert tap_logits[INTERMEDIATE].shape == (2, 20, *frozen.grid_sizes[INTERMEDIATE])
    assert frozen.forward_features(x).shape == bare.forward_features(x).shape

    student = insert_letkd_layers(copy.deepcopy(bare), input_size=input_size, pen_codes=32, inter_codes=20).train()
    logits, tap_logits = student(x, return_tap_logits=True)
    assert logits.shape == expected.shape and not torch.allclose(logits, expected)
    keys = student.state_dict().keys()
    assert any(k.startswith("pen_layer.match") for k in keys)
    assert any(k.startswith(f"model.{inter_module}.layer.match") for k in keys)
    # The dense KL reaches the template weights and the backbone below each tap.
    tap_logits[INTERMEDIATE].logsumexp(1).mean().backward()
    layers = student.tap_layers
    assert layers[INTERMEDIATE].match.weight.grad is not None and layers[PENULTIMATE].match.weight.grad is None
    assert next(iter(student.model.parameters())).grad is not None


def test_tap_logits_do_not_leak_between_calls() -> None:
    student = insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=8,
                                  inter_codes=8)
    tap = student.model.get_submodule(student.inter_module)
    student(torch.randn(2, 3, 32, 32))
    assert tap.logits is None
    student.forward_features(torch.randn(2, 3, 32, 32))
    assert tap.logits is None
    copy.deepcopy(student)  # no graph kept on the module, so EMA-style copies work


def test_teacher_taps_are_read_only_and_match_a_manual_forward() -> None:
    torch.manual_seed(0)
    teacher_model = timm.create_model("cifar_resnet56")
    reference = copy.deepcopy(teacher_model).eval()
    student = insert_letkd_layers(timm.create_model("resnet18", num_classes=10), input_size=(3, 64, 64),
                                  pen_codes=16, inter_codes=20)
    # Teacher at 32 px (8x8 maps) supervises the resnet18 student at 64 px (2x2 maps): pooled 4x4 -> 1.
    teacher = TeacherTaps(teacher_model, grid_sizes=student.grid_sizes, with_logits=True).train()
    assert not teacher.teacher.training
    x32, x64 = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 64, 64)
    out = teacher(x32)
    with torch.no_grad():
        stem = reference.act1(reference.bn1(reference.conv1(x32)))
        first_block = reference.layer3[0](reference.layer2(reference.layer1(stem)))
        final = reference.forward_features(x32)
        torch.testing.assert_close(out.logits, reference(x32))
    expected_inter = first_block.reshape(3, 64, 2, 4, 2, 4).mean((3, 5))
    torch.testing.assert_close(out.maps[INTERMEDIATE], expected_inter)
    torch.testing.assert_close(out.maps[PENULTIMATE], F.avg_pool2d(final, 4))
    assert not out.maps[PENULTIMATE].requires_grad and not out.maps[INTERMEDIATE].requires_grad

    logits, tap_logits = student(x64, return_tap_logits=True)
    loss = logits.sum() + sum(t.sum() for t in tap_logits.values()) + sum(m.sum() for m in out.maps.values())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher_model.parameters())
    with torch.no_grad():  # hooks changed nothing in the teacher's own outputs
        torch.testing.assert_close(teacher_model(x32), reference(x32), rtol=0, atol=0)
    teacher.remove_hooks()
    with pytest.raises(RuntimeError, match="remove_hooks"):
        teacher(x32)


def test_match_grid_and_resolution_errors() -> None:
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(match_grid(x, (4, 3)), x.reshape(2, 3, 4, 2, 3, 2).mean((3, 5)))
    assert match_grid(x, (8, 6)) is x
    with pytest.raises(ValueError, match="integer multiple"):
        match_grid(x, (3, 3))
    model = timm.create_model("convnext_atto")
    assert resolve_intermediate_module(model) == "stages.3.blocks.0"
    with pytest.raises(ValueError, match="inter_module='nope'"):
        resolve_intermediate_module(model, "nope")
    with pytest.raises(ValueError, match="pen_codes"):
        insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=0)
    with pytest.raises(ValueError, match="input_size"):
        insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(32, 32))


def test_a_trained_student_loads_under_its_letkd_layers() -> None:
    """The student's own state_dict (intermediate block keys without ``block.``) loads strictly; with feed-forward
    weights 0 the tapped student then computes exactly what the trained student does."""
    torch.manual_seed(0)
    trained = timm.create_model("cifar_resnet20").eval()
    student = insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=8,
                                  inter_codes=8, alpha_pen=0.0, alpha_inter=0.0).eval()
    layers = copy.deepcopy({name: layer.state_dict() for name, layer in student.tap_layers.items()})
    student.load_student_weights(trained.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student(images), trained(images))
    for name, layer in student.tap_layers.items():  # the inserted layers keep their values
        assert all(torch.equal(value, layers[name][key]) for key, value in layer.state_dict().items())
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=r"missing \['layer3\.0\.conv1\.weight'\]"):
        student.load_student_weights({k: v for k, v in trained.state_dict().items() if k != "layer3.0.conv1.weight"})
    assert all(torch.equal(value, before[key]) for key, value in student.state_dict().items())
