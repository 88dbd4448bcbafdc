"""FFA (Eqs. 8-9), MFFA and FGS (Eq. 7) on binary attribute nets: hand-computed directions on linear nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.attacks.ffa import (FFA, attribute_scores, decisions, ffa, ffa_direction, ffa_loss, fgs, fgs_direction,
                                 fgs_loss, flip_target, softmax_flip_target)


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


class Scores(nn.Module):
    """A net whose scores are given per image: f(x) = s + x[:, 0, 0, 0] * 0 ([B,A]); ``one_d`` returns [B]."""

    def __init__(self, s: torch.Tensor, w0: float = 0.0, one_d: bool = False, kind: str | None = None) -> None:
        super().__init__()
        self.s, self.w0, self.one_d = s, w0, one_d
        if kind is not None:
            self.loss_kind = kind

    def forward(self, x):
        f = self.s + self.w0 * x[:, 0, 0, 0, None]
        return f[:, 0] if self.one_d else f


def test_net_without_loss_kind_is_euclidean_and_one_d_scores_are_one_attribute():
    x = torch.full((3, 3, 2, 2), 0.5)
    s = torch.tensor([[0.5], [-0.5], [1.5]])
    bare = Scores(s, w0=1.0)  # no loss_kind attribute: Euclidean loss (f - y)^2 of Eq. 1
    assert not hasattr(bare, "loss_kind")
    y = torch.tensor([1.0, -1.0, 1.0])
    f = s[:, 0] + 0.5
    torch.testing.assert_close(fgs_loss(bare, x, 0, y), (f - y) ** 2)
    assert attribute_scores(Scores(s, one_d=True), x).shape == (3, 1)
    torch.testing.assert_close(ffa_loss(Scores(s, w0=1.0, one_d=True), x, 0), 0.5 * f ** 2)


def test_decision_at_a_score_of_exactly_zero_is_absent():
    """Eq. 2: present iff f_i(x) > 0, so a score of 0 is absent."""
    x = torch.zeros(2, 3, 2, 2)
    assert decisions(Scores(torch.tensor([[0.0, 1e-30], [-0.0, -1e-30]])), x).tolist() == [[False, True],
                                                                                           [False, False]]


def test_fgs_label_is_plus_minus_one_of_the_current_decision():
    """Eq. 7 with y = c(x) in {-1, +1} on a Euclidean net: d(f - y)^2/dx = 2 (f - y) w. Scores 0.5 (y = +1: push
    down), -0.5 (y = -1: push up) and 1.5 (y = +1, beyond its label: push up); any other label (0, ±2, 3, -0.5)
    turns one of these signs around."""
    s = torch.tensor([[0.0], [-1.0], [1.0]])
    net = Scores(s, w0=1.0)
    x = torch.full((3, 3, 2, 2), 0.5)
    want = torch.tensor([-1.0, 1.0, 1.0])  # sign(f - y) at pixel (0, 0, 0), f = s + x_000
    f = s[:, 0] + 0.5
    assert torch.equal((f - torch.tensor([1.0, -1.0, 1.0])).sign(), want)
    assert torch.equal(fgs_direction(net, x, 0)[:, 0, 0, 0], want)
    out = fgs(net, x, 0, 0.25)
    assert torch.equal(out[:, 0, 0, 0], 0.5 + 0.25 * want)
    rest = out.clone()
    rest[:, 0, 0, 0] = 0.5
    assert torch.equal(rest, x)  # the other pixels have zero gradient


class TwoLogits(nn.Module):
    """A softmax-loss net with given logits [B,A,2] (plus x[:, 0, 0, 0] on the 'present' logit of every attribute)."""

    loss_kind = "softmax"

    def __init__(self, lg: torch.Tensor) -> None:
        super().__init__()
        self.lg = lg

    def logits(self, x):
        add = torch.zeros_like(self.lg)
        add[..., 1] = 1.0
        return self.lg + add * x[:, 0, 0, 0, None, None]

    def forward(self, x):
        lg = self.logits(x)
        return lg[..., 1] - lg[..., 0]


def test_softmax_ffa_and_fgs_losses_on_general_logits():
    """§5: the higher of the two logits is set to zero, so the FFA loss is 1/2 max(l)^2 whatever the other logit;
    FGS is the per-image cross-entropy of the current class. Three attributes, the last one attacked."""
    x = torch.zeros(3, 3, 2, 2)
    lg = torch.zeros(3, 3, 2)
    lg[:, 2] = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-4.0, -1.5]])
    net = TwoLogits(lg)
    torch.testing.assert_close(ffa_loss(net, x, 2), torch.tensor([2.0, 4.5, 1.125]))
    y = torch.tensor([-1.0, 1.0, 1.0])
    want = torch.nn.functional.cross_entropy(lg[:, 2], torch.tensor([0, 1, 1]), reduction="none")
    got = fgs_loss(net, x, 2, y)
    assert got.shape == (3,)
    torch.testing.assert_close(got, want)
    # the FFA direction lowers the higher logit towards 0: here d l_max / dx0 = 1 for image 1 (present higher)
    d = ffa_direction(net, x, 2)
    assert d[1, 0, 0, 0] == -1.0 and d[0].abs().sum() == 0  # image 0: the higher logit does not move with x


def test_eps_tensor_of_another_dtype_keeps_the_image_dtype():
    net, x = net_and_image(2)
    e = torch.tensor([0.0, 0.01, 0.02], dtype=torch.float64)
    y = ffa(net, x, 0, e)
    assert y.dtype == x.dtype
    torch.testing.assert_close(y, torch.clamp(x + e.float().view(-1, 1, 1, 1) * ffa_direction(net, x, 0), 0, 1))
    assert torch.equal(y[0], x[0])
