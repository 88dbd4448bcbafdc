"""FGSM / I-FGSM core: eps-ball, masks, zero steps, stop rule, and a hand-computed step."""

import pytest
import torch

from facelab.attacks.fgsm import FGSM, IFGSM, fgsm, ifgsm, input_gradient


def _lin(w):
    return lambda x: (x * w).flatten(1).sum(1)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    w = torch.randn(1, 3, 8, 8, generator=g)
    return x, w


def test_fgsm_is_one_signed_step_clipped(data):
    x, w = data
    out = fgsm(x, _lin(w), 0.1)
    assert torch.equal(out, torch.clamp(x + 0.1 * w.sign(), 0, 1))


def test_fgsm_per_image_eps(data):
    x, w = data
    out = fgsm(x, _lin(w), torch.tensor([0.0, 0.1, 0.2]))
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out[2], torch.clamp(x[2] + 0.2 * w[0].sign(), 0, 1))


@pytest.mark.parametrize("random_start", [False, True])
def test_ifgsm_never_leaves_the_ball_or_the_image_range(data, random_start):
    x, w = data
    q = lambda z: ((z - 0.5 * w) ** 2).flatten(1).sum(1)  # noqa: E731 - pushes pixels far out
    out = ifgsm(x, q, 0.03, 20, 0.01, random_start=random_start, generator=torch.Generator().manual_seed(1))
    assert (out - x).abs().max() <= 0.03 + 1e-7
    assert out.min() >= 0 and out.max() <= 1
    assert (out != x).any()


def test_zero_steps_and_zero_eps_change_nothing(data):
    x, w = data
    assert torch.equal(ifgsm(x, _lin(w), 0.05, 0), x)
    assert torch.equal(ifgsm(x, _lin(w), 0.0, 5, 0.01), x)


def test_mask_restricts_changes(data):
    x, w = data
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:5, 2:5] = 1
    out = ifgsm(x, _lin(w), 0.1, 3, 0.05, mask=m)
    assert torch.equal(out * (1 - m), x * (1 - m))
    assert (out * m != x * m).any()


def test_ifgsm_hand_computed_linear_case(data):
    x, w = data
    x = x * 0.5 + 0.25  # away from the [0,1] borders
    out = ifgsm(x, _lin(w), 0.1, 3, 0.04)  # 0.04, 0.08, then clipped at 0.1
    assert torch.allclose(out, x + 0.1 * w.sign(), atol=1e-6)


def test_stop_freezes_successful_images(data):
    x, w = data
    stop = lambda z: torch.tensor([True, False, False])  # noqa: E731
    out = ifgsm(x, _lin(w), 0.1, 3, 0.05, stop=stop)
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1])


def test_input_gradient_does_not_touch_the_input(data):
    x, w = data
    g = input_gradient(x, _lin(w))
    assert torch.equal(g, w.expand_as(x)) and not x.requires_grad and x.grad is None


@pytest.mark.parametrize("kw,name", [({"eps": -1.0}, "eps"), ({"steps": -1}, "steps"), ({"steps": 1.5}, "steps"),
                                     ({"alpha": -0.1}, "alpha")])
def test_bad_parameters_are_named(data, kw, name):
    x, w = data
    args = {"eps": 0.1, "steps": 2, "alpha": 0.05} | kw
    with pytest.raises(ValueError, match=name):
        ifgsm(x, _lin(w), **args)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="images"):
        fgsm(torch.zeros(3, 8, 8), lambda z: z.sum(), 0.1)
    with pytest.raises(ValueError, match="mask"):
        ifgsm(torch.zeros(1, 3, 4, 4), lambda z: z.sum(), 0.1, 1, mask=torch.full((1, 1, 4, 4), 0.5))


def test_wrappers_keep_the_victim_frozen(data):
    x, w = data
    model = torch.nn.Linear(2, 2)
    out = IFGSM(model, eps=0.05, steps=2)(x, _lin(w))
    assert (out - x).abs().max() <= 0.05 + 1e-7
    assert torch.equal(FGSM(model, eps=0.05)(x, _lin(w)), fgsm(x, _lin(w), 0.05))
    assert all(p.requires_grad for p in model.parameters())
