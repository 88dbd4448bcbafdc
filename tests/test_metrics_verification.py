"""Verification as a classifier (ResGN paper Eq. 2, Eq. 5): distance, score, losses, threshold choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelab.metrics.verification import (
    D_MAX,
    choose_threshold,
    embedding_distance,
    eq2_score,
    h_of,
    pair_loss,
    verification_accuracy,
    verification_loss,
)


def test_eq2_hand_values_and_range():
    d = torch.tensor([0.0, 0.55, 1.1, 2.55, 4.0])
    s = eq2_score(d, 1.1, 4.0)
    assert s.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # plain Euclidean on unit-norm embeddings: d_max 2, still [0, 1] and 0.5 at eta
    e = eq2_score(torch.tensor([0.0, 0.6, 1.3, 2.0]), 0.6, D_MAX["euclidean"])
    assert e.tolist() == pytest.approx([0.0, 0.5, 0.75, 1.0])
    r = eq2_score(torch.linspace(0, 4, 401), 0.3)
    assert float(r.min()) >= 0 and float(r.max()) <= 1 and bool((r.diff() >= 0).all())
    # clamped beyond d_max (rounding), never outside [0, 1]
    assert float(eq2_score(torch.tensor(4.2), 1.1)) == 1.0
    h = h_of(s)
    assert torch.allclose(h.sum(-1), torch.ones(5)) and h.shape == (5, 2)


@pytest.mark.parametrize("eta", [0.0, -1.0, 4.0, 5.0, float("nan")])
def test_eq2_rejects_bad_threshold(eta):
    with pytest.raises(ValueError, match="eta"):
        eq2_score(torch.tensor([1.0]), eta, 4.0)


def test_distance_of_unit_norm_embeddings():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [-5.0, 0.0], [7.0, 0.0]])
    assert embedding_distance(a, b).tolist() == pytest.approx([2.0, 4.0, 0.0])  # orthogonal, opposite, same
    assert embedding_distance(a, b, "euclidean").tolist() == pytest.approx([math.sqrt(2), 2.0, 0.0], abs=1e-5)
    x, y = torch.randn(6, 16), torch.randn(6, 16)
    # scale invariant (the embeddings are normalised first), within [0, 4]
    assert torch.allclose(embedding_distance(3 * x, 0.5 * y), embedding_distance(x, y), atol=1e-6)
    d = embedding_distance(x, y)
    assert float(d.min()) >= 0 and float(d.max()) <= 4


def test_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        embedding_distance(torch.ones(1, 3), torch.ones(1, 3), "cosine")
    with pytest.raises(ValueError, match="embeddings"):
        embedding_distance(torch.ones(3), torch.ones(1, 3))


def test_pair_loss_and_verification_loss():
    s = torch.tensor([0.2, 0.7])
    assert pair_loss(s, True).tolist() == pytest.approx([-math.log(0.8), -math.log(0.3)])
    assert pair_loss(s, torch.tensor([False, True])).tolist() == pytest.approx([-math.log(0.2), -math.log(0.3)])
    assert verification_loss(s).tolist() == pytest.approx([-math.log(0.8), -math.log(0.3)])
    assert float(verification_loss(torch.tensor(0.0))) == 0.0
    assert math.isfinite(float(pair_loss(torch.tensor(1.0), True)))  # clamped, finite


def test_ascending_the_pair_loss_is_dodging_or_impersonation():
    """FGSM ascends the loss: on a genuine pair the distance grows, on an impostor pair it shrinks."""
    ref = torch.tensor([[1.0, 0.0, 0.0]])
    for same, start, sign in ((True, [1.0, 0.3, 0.0], 1), (False, [0.2, 1.0, 0.0], -1)):
        e = torch.tensor([start], requires_grad=True)
        d = embedding_distance(e, ref)
        pair_loss(eq2_score(d, 0.5), same).sum().backward()
        with torch.no_grad():
            d2 = embedding_distance(e + 0.01 * e.grad.sign(), ref)
        assert sign * float(d2 - d.detach()) > 0


def test_choose_threshold():
    eta, acc = choose_threshold([0.1, 0.2], [0.5, 0.6])
    assert acc == 1.0 and eta == pytest.approx(0.35)
    # widest gap among equally accurate thresholds
    eta, acc = choose_threshold([0.1, 0.12], [0.13, 0.9])
    assert acc == 1.0 and eta == pytest.approx(0.125)
    eta, acc = choose_threshold([0.1, 0.7], [0.5, 0.6])
    assert acc == pytest.approx(0.75)
    assert verification_accuracy(np.array([0.1, 0.7, 0.5, 0.6]), np.array([True, True, False, False]), eta) == acc
    with pytest.raises(ValueError, match="genuine and impostor"):
        choose_threshold([], [0.5])
    with pytest.raises(ValueError, match="finite"):
        choose_threshold([float("nan")], [0.5])


def test_verification_accuracy_hand_value_and_errors():
    d = np.array([0.1, 0.3, 0.2, 0.05])
    same = np.array([True, True, False, False])
    assert verification_accuracy(d, same, 0.25) == 0.25  # only the first pair is decided correctly
    with pytest.raises(ValueError, match="same non-empty shape"):
        verification_accuracy(d, same[:2], 0.25)


# -- exact rules (issue 19: mutation testing of facelab/metrics/verification.py) ---------------------------

def test_distance_refuses_embeddings_of_different_width():
    with pytest.raises(ValueError, match=r"^embedding_distance: expected embeddings \[B,D\] and \[B,D\], got "
                                         r"\(2, 3\) and \(2, 4\)$"):
        embedding_distance(torch.ones(2, 3), torch.ones(2, 4))


def test_distance_normalises_short_embeddings_exactly():
    # norms 0.1 and 0.05: after L2 normalisation both are unit vectors, 90 degrees apart -> d = 2 (squared)
    a, b = torch.tensor([[0.1, 0.0]]), torch.tensor([[0.0, 0.05]])
    assert embedding_distance(a, b).tolist() == pytest.approx([2.0], abs=1e-6)
    assert embedding_distance(a, b, "euclidean").tolist() == pytest.approx([2 ** 0.5], abs=1e-6)
    assert embedding_distance(a, a * 3).tolist() == pytest.approx([0.0], abs=1e-7)


def test_eq2_score_is_clamped_below_and_h_keeps_extra_dims():
    assert eq2_score(torch.tensor([-0.5, 5.0]), 1.0).tolist() == [0.0, 1.0]  # outside [0, d_max]: clamped
    s = torch.tensor([[0.25, 0.5, 1.0]])
    h = h_of(s)
    assert h.shape == (1, 3, 2) and h[0, :, 1].tolist() == [0.25, 0.5, 1.0] and h[0, :, 0].tolist() == [0.75, 0.5, 0.0]


def test_pair_loss_takes_integer_labels():
    score = torch.tensor([0.25, 0.75])
    loss = pair_loss(score, [1, 0])  # 1 = same person (genuine), 0 = impostor
    assert loss.tolist() == pytest.approx([-math.log(0.75), -math.log(0.75)])


def test_choose_threshold_single_value_two_values_and_message():
    assert choose_threshold([0.2, 0.2, 0.2], [0.2]) == (0.2 + 1e-6, 0.75)
    assert choose_threshold([0.1], [0.5]) == (0.3, 1.0)
    with pytest.raises(ValueError, match=r"^choose_threshold: distances must be finite$"):
        choose_threshold([0.1, float("nan")], [0.5])


def test_choose_threshold_ties_go_to_the_widest_gap_wherever_it_is():
    # both thresholds 2.0 and 9.5 classify 3 of 4 pairs; the gap around 2.0 (0..4) is the widest
    assert choose_threshold([0.0, 9.0], [4.0, 10.0]) == (2.0, 0.75)
    # 0.5 and 8.0 classify 3 of 4; the gap around 8.0 (6..10) is the widest, and it is not the first candidate
    assert choose_threshold([0.0, 6.0], [1.0, 10.0]) == (8.0, 0.75)


def test_choose_threshold_midpoint_of_adjacent_floats():
    # the midpoint of two adjacent doubles rounds onto one of them; genuine pairs need d < eta strictly,
    # impostor pairs d >= eta
    lo = 1.0
    hi = float(np.nextafter(lo, 2.0))
    assert choose_threshold([lo], [hi]) == (lo, 0.5)  # the mid rounds down onto lo: lo < lo is false
    lo2 = hi
    hi2 = float(np.nextafter(lo2, 2.0))
    assert choose_threshold([lo2], [hi2]) == (hi2, 1.0)  # the mid rounds up onto hi2: hi2 >= hi2 holds


def test_verification_accuracy_at_exactly_eta():
    # d == eta is "not the same person" (d >= eta)
    assert verification_accuracy([1.0, 1.0], [True, False], 1.0) == 0.5


def test_verification_accuracy_distance_exactly_at_eta_is_an_impostor_decision():
    d = np.array([0.5, 0.2])
    assert verification_accuracy(d, np.array([False, True]), 0.5) == 1.0  # d = eta decides "different"
    assert verification_accuracy(d, np.array([True, True]), 0.5) == 0.5
