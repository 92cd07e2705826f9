"""The asymmetric loss's closed-form gradient (what CFT-BP steps with) against autograd's."""

import itertools

import pytest
import torch

from hf_cft.losses import asymmetric_loss, asymmetric_loss_grad


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip"),
                         list(itertools.product([0, 0.5, 1, 2, 4], [0, 1], [0, 0.05, 1e-9])))
def test_asl_gradient_equals_autograd(gamma_neg, gamma_pos, clip):
    """Every branch (the defaults' short form included: γ+ = 0, γ− ≥ 1, clip ≥ eps), logits from −40 to 40
    (sigmoid below eps, clip crossings), masked entries: equal to float64 rounding."""
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([torch.linspace(-40, 40, 801), 3 * torch.randn(400, generator=gen)]).double()
    y = (torch.rand(z.shape, generator=gen) < 0.4).double()
    mask = torch.rand(z.shape, generator=gen) < 0.8
    leaf = z.clone().requires_grad_(True)
    asymmetric_loss(leaf, y, mask, gamma_neg, gamma_pos, clip).backward()
    got = asymmetric_loss_grad(z, y, mask, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, leaf.grad, rtol=0, atol=1e-14)
    assert bool((got[~mask] == 0).all())


@pytest.mark.parametrize("clip", [1e-8, 2e-8, 3e-8, 0.05])
def test_asl_gradient_float32_is_finite_where_sigmoid_saturates(clip):
    """In float32 sigmoid(20) is exactly 1, and 1 − clip rounds to 1 for clip below the machine epsilon: the short
    form is not taken there (it would divide by q = 0); either way the gradient is autograd's."""
    z = torch.tensor([-40.0, -20.0, 0.0, 3.0, 20.0, 40.0])
    for y in (torch.zeros(6), torch.ones(6)):
        leaf = z.clone().requires_grad_(True)
        asymmetric_loss(leaf, y, None, 4.0, 0.0, clip).backward()
        got = asymmetric_loss_grad(z, y, clip=clip)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, leaf.grad, rtol=1e-5, atol=1e-7)
