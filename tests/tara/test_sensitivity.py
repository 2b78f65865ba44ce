"""J against finite differences, h(ρ) against autograd of the scalarised loss, κ and ξ goldens."""

from __future__ import annotations

import math

import pytest
import torch

from merging_core.adaptive.banks import bank_variant_a, bank_variant_b, updates_from
from merging_core.adaptive.objective import mean_entropy
from merging_core.preference import stch
from merging_core.sensitivity import (
    condition_number,
    directional_jacobian,
    misalignment,
    per_task_anisotropy,
    preference_sensitivity,
    summarise,
)

from .conftest import MODULES


def entropies_at(data, banks, phi):
    with torch.no_grad():
        feats = data.features([data.inputs[t] for t in data.task_names], updates_from(banks, phi))
        return [
            float(mean_entropy(data.logits(t, f, scale=data.entropy_scale)))
            for t, f in zip(data.task_names, feats, strict=True)
        ]


@pytest.mark.parametrize(("variant", "build"), [("a", bank_variant_a), ("b", bank_variant_b)])
def test_jacobian_matches_central_finite_differences(toy_adapters, toy_context, variant, build):
    sens = directional_jacobian(toy_adapters, toy_context, variant=variant, batch_size=1000)
    banks = {p: build(toy_adapters, p) for p in MODULES}
    assert sens.J.shape == (3, sum(b.size for b in banks.values()))
    eps, g = 1e-2, torch.Generator().manual_seed(0)
    for k in torch.randperm(sens.J.shape[1], generator=g)[:6].tolist():
        path, local, _ = sens.directions[k]
        plus = {p: torch.full((b.size,), 0.4) for p, b in banks.items()}
        minus = {p: v.clone() for p, v in plus.items()}
        plus[path][local] += eps
        minus[path][local] -= eps
        hp, hm = entropies_at(toy_context, banks, plus), entropies_at(toy_context, banks, minus)
        fd = torch.tensor([(a - b) / (2 * eps) for a, b in zip(hp, hm, strict=True)])
        torch.testing.assert_close(sens.J[:, k].float(), fd, atol=2e-4, rtol=2e-2)


def test_unit_norm_divides_by_direction_norms(toy_adapters, toy_context):
    raw = directional_jacobian(toy_adapters, toy_context, variant="a", batch_size=1000)
    unit = directional_jacobian(toy_adapters, toy_context, variant="a", batch_size=1000,
                                unit_norm=True)  # fmt: skip
    bank = bank_variant_a(toy_adapters, "fc1")
    k = 1
    b, a = bank.B[:, k], bank.A[k]
    norm = float(torch.linalg.vector_norm(b) * torch.linalg.vector_norm(a))
    assert float(unit.J[0, k]) == pytest.approx(float(raw.J[0, k]) / norm, rel=1e-5)


def test_h_equals_gradient_of_the_scalarised_loss(toy_adapters, toy_context):
    sens = directional_jacobian(toy_adapters, toy_context, variant="b", batch_size=1000)
    rho = [0.2, 0.5, 0.3]
    # Autograd through J's chain rule: d/dφ STCH(H(φ)) = Σ_i ∂STCH/∂H_i · J_i.
    H = sens.entropies.clone().requires_grad_(True)
    stch(H, torch.tensor(rho, dtype=torch.float64), torch.tensor(sens.anchors, dtype=torch.float64),
         alpha=0.3).backward()  # fmt: skip
    torch.testing.assert_close(
        preference_sensitivity(sens, rho, kind="stch", alpha=0.3), sens.J.T @ H.grad
    )
    torch.testing.assert_close(
        preference_sensitivity(sens, rho, kind="linear"), sens.J.T @ torch.tensor(rho).double()
    )


def test_condition_number_and_misalignment_goldens():
    J = torch.diag(torch.tensor([4.0, 1.0, 0.5])).double()
    assert condition_number(J) == pytest.approx(8.0)
    assert condition_number(torch.zeros(2, 3)) == math.inf
    assert per_task_anisotropy(torch.tensor([[1.0, -4.0], [2.0, 2.0]])) == [4.0, 1.0]
    x = torch.tensor([1.0, 0.0])
    assert misalignment(x, torch.tensor([-3.0, 0.0])) == pytest.approx(0.0)
    assert misalignment(x, torch.tensor([0.0, 2.0])) == pytest.approx(1.0)
    assert misalignment(x, torch.tensor([1.0, 1.0])) == pytest.approx(1 - 2**-0.5)
    with pytest.raises(ValueError, match="zero"):
        misalignment(x, torch.zeros(2))


def test_summary_is_json_able(toy_adapters, toy_context):
    import json

    sens = directional_jacobian(toy_adapters, toy_context, variant="b", unit_norm=True)
    rhos = torch.tensor([[1 / 3] * 3, [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    out = summarise(sens, rhos)
    json.dumps(out)
    assert 0.0 <= out["xi_mean"] <= out["xi_max"] <= 1.0 and out["kappa"] >= 1.0
