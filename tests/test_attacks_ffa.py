"""FFA (Eqs. 8-9), MFFA and FGS (Eq. 7) on binary attribute nets: hand-computed directions on linear nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.attacks.ffa import (FFA, decisions, ffa, ffa_direction, ffa_loss, fgs, fgs_direction, flip_target,
                                 softmax_flip_target)


class Linear(nn.Module):
    """f(x) = W vec(x) + b, [B,A]; loss_kind as given (softmax: logits [B,A,2] = (0, f))."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, kind: str = "euclidean") -> None:
        super().__init__()
        self.w, self.b, self.loss_kind = nn.Parameter(w), nn.Parameter(b), kind

    def forward(self, x):
        return x.flatten(1) @ self.w.t() + self.b

    def logits(self, x):
        f = self(x)
        return torch.stack([torch.zeros_like(f), f], -1)


def net_and_image(a: int = 2, kind: str = "euclidean", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(a, 3 * 4 * 4, generator=g)
    return Linear(w, torch.zeros(a), kind), torch.rand(3, 3, 4, 4, generator=g) * 0.5 + 0.25


def test_flip_target_zeroes_only_the_attacked_attribute():
    s = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.75, -0.25]])
    assert flip_target(s, 1).tolist() == [[1.0, 0.0, 3.0], [0.5, 0.0, -0.25]]
    assert flip_target(s, torch.tensor([2, 0])).tolist() == [[1.0, -2.0, 0.0], [0.0, 0.75, -0.25]]
    assert s[0, 1] == -2.0  # not in place
    with pytest.raises(ValueError, match="index"):
        flip_target(s, 3)
    with pytest.raises(ValueError, match="index"):
        flip_target(s, torch.tensor([0, 1, 2]))


def test_softmax_flip_target_zeroes_the_higher_logit():
    lg = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    assert softmax_flip_target(lg).tolist() == [[0.0, -1.0], [0.5, 0.0]]
    with pytest.raises(ValueError, match="logits"):
        softmax_flip_target(torch.zeros(2, 3))


def test_ffa_direction_is_the_normalised_descent_of_the_attacked_score():
    net, x = net_and_image()
    f = net(x)
    for i in range(2):
        d = ffa_direction(net, x, i)
        # -grad 1/2 (0 - f_i)^2 = -f_i w_i, scaled to L-inf 1
        want = -f[:, i:i + 1].sign() * net.w[i].view(1, -1) / net.w[i].abs().max()
        torch.testing.assert_close(d.flatten(1), want.detach().expand(3, -1))
        assert torch.allclose(d.flatten(1).abs().amax(1), torch.ones(3))
        # the loss is Eq. 9's: 1/2 f_i^2 for a net whose other scores are its own targets
        torch.testing.assert_close(ffa_loss(net, x, i), 0.5 * f[:, i].detach() ** 2)


def test_mffa_ignores_the_other_outputs_at_the_current_image():
    """Eq. 8 keeps the other scores as targets, so their terms have zero gradient at x: MFFA on a 3-output
    net equals FFA on the same net cut down to the attacked output."""
    net3, x = net_and_image(3)
    one = Linear(net3.w[1:2].detach().clone(), net3.b[1:2].detach().clone())
    torch.testing.assert_close(ffa_direction(net3, x, 1), ffa_direction(one, x, 0))


def test_ffa_step_flips_a_linear_attribute_when_eps_reaches_the_margin():
    net, x = net_and_image(1)
    f = net(x)[:, 0].detach()
    d = ffa_direction(net, x, 0)
    step = (d.flatten(1) @ net.w[0].detach())  # df per unit eps, negative towards zero
    eps_flip = (f.abs() / step.abs())
    assert (eps_flip < 0.25).all()  # small enough to stay inside [0, 1] from x in [0.25, 0.75]
    after = net(ffa(net, x, 0, eps_flip * 1.01))[:, 0]
    before = net(ffa(net, x, 0, eps_flip * 0.99))[:, 0]
    assert ((after > 0) != (f > 0)).all() and ((before > 0) == (f > 0)).all()
    assert torch.equal(ffa(net, x, 0, 0.0), x)  # eps 0 changes nothing
    assert FFA(net, eps=0.0)(x, 0).equal(x)
    with pytest.raises(ValueError, match="eps"):
        ffa(net, x, 0, -1.0)


def test_ffa_stays_in_the_unit_box():
    net, x = net_and_image(2)
    y = ffa(net, x, 0, 5.0)
    assert y.min() >= 0 and y.max() <= 1


def test_fgs_on_the_current_decision_flips_a_log_odds_net_and_is_signed():
    net, x = net_and_image(1, "logodds")
    f = net(x)[:, 0].detach()
    d = fgs_direction(net, x, 0)
    # BCE of the current decision y = sign f: its gradient moves f towards the other side
    want = -f.sign().view(-1, 1) * net.w[0].detach().sign().view(1, -1)
    torch.testing.assert_close(d.flatten(1), want)
    assert set(d.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_fgs_with_euclidean_loss_pushes_an_overconfident_score_further_out():
    """Eq. 7 on Eq. 1 with y = c(x): a score beyond its label (|f| > 1) gets *increased* by FGS — FGS does not
    flip it, FFA does (the paper's reason FFA flips more)."""
    w = torch.zeros(1, 3 * 4 * 4)
    w[0, 0] = 1.0
    net = Linear(w, torch.tensor([2.0]))  # f = x_0 + 2 > 1
    x = torch.full((1, 3, 4, 4), 0.5)
    assert fgs_direction(net, x, 0).flatten()[0] == 1.0  # d(f - 1)^2/dx0 = 2 (f - 1) > 0
    assert ffa_direction(net, x, 0).flatten()[0] == -1.0
    net.b.data = torch.tensor([0.2])  # f = 0.7 < 1: FGS now lowers it towards the flip
    assert fgs_direction(net, x, 0).flatten()[0] == -1.0
    assert torch.equal(fgs(net, x, 0, 0.0), x)


def test_softmax_kind_uses_the_logits():
    net, x = net_and_image(2, "softmax")
    f = net(x)
    # logits (0, f_i): the higher one is set to zero; for f_i > 0 the loss is 1/2 f_i^2, else 1/2 * 0
    want = 0.5 * f[:, 1].clamp_min(0).detach() ** 2
    torch.testing.assert_close(ffa_loss(net, x, 1), want)
    # FGS with the cross-entropy of the current class moves the score towards the other class
    d = fgs_direction(net, x, 1)
    torch.testing.assert_close(d.flatten(1), -f[:, 1:2].sign().detach() * net.w[1].detach().sign().view(1, -1))


def test_bad_loss_kind_is_named():
    net, x = net_and_image(1, "hinge")
    with pytest.raises(ValueError, match="loss_kind"):
        ffa_direction(net, x, 0)


def test_decisions_and_frozen_victim():
    net, x = net_and_image(2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ffa_direction(net, x, 0)
    fgs_direction(net, x, 1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert decisions(net, x).equal(net(x) > 0)
