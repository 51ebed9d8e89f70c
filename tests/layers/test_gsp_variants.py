"""The official GSP variants as options of the layer: ``head='gmp'``, ``add_max_pool`` and the prototype init from
class weights (``init='weights_kcenter'``), each against a brute-force float64 reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_gsp_layer import DIM, K, N, make_features, make_gsp, reference_gsp

from gsp_hub.layers import GSP, create_pool
from gsp_hub.layers.pooling import check_pool_kwargs


def max_over_locations(values: np.ndarray) -> np.ndarray:
    """(B, N, D) -> (B, D): a running maximum over the locations, one at a time."""
    result = values[:, 0].copy()
    for j in range(1, values.shape[1]):
        result = np.maximum(result, values[:, j])
    return result


@pytest.mark.parametrize(("ratio", "gamma"), [(0.3, 5.0), (0.9, 20.0), (0.1, 0.5)])
def test_gmp_head_is_the_max_of_the_reweighted_features(ratio: float, gamma: float) -> None:
    """pooled = max_j (N w_j) f_j (the official PyTorch head); weights and attributes are those of the GAP head."""
    layer = make_gsp(ratio, gamma, head="gmp").double()
    features = make_features(dtype=torch.float64)
    expected = reference_gsp(features, layer.prototypes, ratio, gamma)
    reweighted = N * expected["weights"][:, :, None] * features.numpy()
    output = layer.transport(features)
    np.testing.assert_allclose(output.pooled.detach().numpy(), max_over_locations(reweighted), rtol=0, atol=1e-10)
    for name in ("weights", "attributes"):
        np.testing.assert_allclose(getattr(output, name).detach().numpy(), expected[name], rtol=0, atol=1e-10)
    output32 = make_gsp(ratio, gamma, head="gmp").transport(features.float())
    np.testing.assert_allclose(output32.pooled.detach().double().numpy(), max_over_locations(reweighted), rtol=0,
                               atol=1e-4)


def test_gmp_head_with_uniform_weights_is_plain_max_pooling() -> None:
    features = make_features()
    pooled = make_gsp(ratio=1.0, head="gmp")(features)
    torch.testing.assert_close(pooled, features.amax(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(pooled, create_pool("max", DIM)(features), rtol=0, atol=0)


@pytest.mark.parametrize("head", ["gap", "gmp"])
def test_add_max_pool_adds_the_max_of_the_unweighted_features(head: str) -> None:
    ratio, gamma = 0.3, 5.0
    layer = make_gsp(ratio, gamma, head=head, add_max_pool=True).double()
    features = make_features(dtype=torch.float64)
    reference = reference_gsp(features, layer.prototypes, ratio, gamma)
    if head == "gap":
        head_pooled = reference["pooled"]
    else:
        head_pooled = max_over_locations(N * reference["weights"][:, :, None] * features.numpy())
    output = layer.transport(features)
    expected = head_pooled + max_over_locations(features.numpy())
    np.testing.assert_allclose(output.pooled.detach().numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(output.weights.detach().numpy(), reference["weights"], rtol=0, atol=1e-10)


def farthest_points_from_row_0(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force of the PyTorch port's init on unit-ball rows: row 0, then k - 1 times the row of rows 1.. whose
    distance to the nearest chosen row is largest."""
    rows = weights.double() / weights.double().norm(dim=1, keepdim=True).clamp(min=1)
    chosen = [0]
    while len(chosen) < k:
        distances = [min(float(((rows[i] - rows[c]) ** 2).sum()) for c in chosen) if i not in chosen else -1.0
                     for i in range(1, len(rows))]
        chosen.append(1 + int(np.argmax(distances)))
    return rows[chosen]


@pytest.mark.parametrize(("num_prototypes", "num_rows"), [(K, 3 * K), (K, K), (1, 4)])
def test_init_from_weights_keeps_row_0_then_picks_farthest_points(num_prototypes: int, num_rows: int) -> None:
    torch.manual_seed(0)
    layer = GSP(DIM, num_prototypes=num_prototypes, memory_size=1, init="weights_kcenter")
    parameter = layer.prototypes
    generator = torch.Generator().manual_seed(5)
    weights = torch.randn(num_rows, DIM, generator=generator) * torch.rand(num_rows, 1, generator=generator) * 0.8
    assert not layer.initialized
    layer.init_prototypes_from_weights_(weights)
    expected = farthest_points_from_row_0(weights, num_prototypes)
    torch.testing.assert_close(layer.prototypes.detach().double(), expected, rtol=0, atol=1e-6)
    assert layer.initialized and layer.prototypes is parameter


def test_options_pass_the_pool_registry_and_show_in_the_repr() -> None:
    options = {"head": "gmp", "add_max_pool": True, "init": "weights_kcenter", "memory_size": 1}
    check_pool_kwargs("gsp", options)
    layer = create_pool("gsp", DIM, num_prototypes=K, **options)
    assert (layer.head, layer.add_max_pool, layer.init) == ("gmp", True, "weights_kcenter")
    assert "head='gmp', add_max_pool=True, init='weights_kcenter'" in repr(layer)
    assert "head='gap', add_max_pool=False, init='memory_kcenter'" in repr(GSP(DIM))
    with pytest.raises(ValueError, match=re.escape("unknown key(s) ['add_maxpool']")):
        check_pool_kwargs("gsp", {"add_maxpool": True})


def test_variants_export_without_data_dependent_control_flow() -> None:
    layer = make_gsp(head="gmp", add_max_pool=True)
    features = make_features()
    exported = torch.export.export(layer, (features,))
    torch.testing.assert_close(exported.module()(features), layer(features), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head": "max"}, "head must be one of ['gap', 'gmp'] (pooling of the re-weighted features: 'gap' sum, "
                          "'gmp' max), got 'max'."),
        ({"head": "gmpp"}, "got 'gmpp' (did you mean ['gmp']?)."),
        ({"add_max_pool": 1}, "add_max_pool must be True or False (add the global max pooling of the un-weighted "
                              "features), got 1; pass add_max_pool=True or add_max_pool=False."),
        ({"add_max_pool": "true"}, "got 'true'; pass add_max_pool=True or add_max_pool=False (YAML reads true"),
        ({"init": "random"}, "init must be one of ['memory_kcenter', 'weights_kcenter'] (where the warm-up takes the "
                             "prototypes from), got 'random'."),
        ({"init": "weights_kcenter", "memory_size": 0}, "memory_size must be an int >= 1 (pooled embeddings seen "
                                                        "before the prototypes are picked from the class weights)"),
        ({"memory_size": 100}, "memory_size must be an int >= 128 (2 * num_prototypes: k-center needs"),
    ],
)
def test_bad_variant_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GSP(16, **kwargs)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (torch.randn(K - 1, DIM), "weights must have at least num_prototypes = 5 rows (one per prototype), got 4; "
                                  "pass more class weights (e.g. several proxies per class, --loss ccp) or lower "
                                  "num_prototypes."),
        (torch.randn(K, DIM + 1), "weights must be a tensor of shape (C, 8), got (5, 9)."),
        (torch.randn(K, DIM).numpy(), "weights must be a tensor of shape (C, 8), got ndarray."),
        (torch.full((K, DIM), float("nan")), "weights must contain only finite values, got NaN or inf entries."),
    ],
)
def test_bad_class_weights_raise(weights, message: str) -> None:
    layer = make_gsp()
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.init_prototypes_from_weights_(weights)
    assert not layer.initialized

