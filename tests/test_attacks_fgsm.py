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


# --- exact values and messages (issue 19: mutation survivors) ---------------------------------------------------


def _mid():
    """Two images in [0.25, 0.75] (away from the [0, 1] borders) and a linear loss with some zero weights."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 4, 4, generator=g) * 0.5 + 0.25
    w = torch.randn(1, 3, 4, 4, generator=g)
    w[..., 0, :] = 0.0
    return x, w


def test_project_linf_hand_computed_at_every_boundary():
    from facelab.attacks.fgsm import project_linf
    x = torch.tensor([0.0625, 0.5, 0.9375, 0.5, 0.5])
    x_adv = torch.tensor([-0.25, 0.25, 1.25, 0.75, 0.5625])
    # below the ball and below 0; below the ball; above the ball and above 1; above the ball; inside
    assert torch.equal(project_linf(x_adv, x, 0.125), torch.tensor([0.0, 0.375, 1.0, 0.625, 0.5625]))


def test_check_messages_are_exact():
    lin = lambda z: z.sum()  # noqa: E731
    shape = r"^images: expected a float tensor \[B,C,H,W\], got torch\.Size\(\[3, 8, 8\]\)$"
    with pytest.raises(ValueError, match=shape):
        fgsm(torch.zeros(3, 8, 8), lin, 0.1)
    with pytest.raises(ValueError, match=r"^images: expected a float tensor \[B,C,H,W\], got <class 'list'>$"):
        fgsm([0.0, 1.0], lin, 0.1)
    with pytest.raises(ValueError, match=r"^images: expected a float tensor in \[0, 1\], got dtype torch\.int64$"):
        fgsm(torch.zeros(1, 3, 2, 2, dtype=torch.int64), lin, 0.1)
    with pytest.raises(ValueError, match=r"^eps: must be a number >= 0, got -0\.5$"):
        fgsm(torch.zeros(1, 3, 2, 2), lin, -0.5)
    with pytest.raises(ValueError, match=r"^eps: must be a number >= 0, got -0\.5$"):
        ifgsm(torch.zeros(1, 3, 2, 2), lin, -0.5, 1)
    with pytest.raises(ValueError, match=r"^mask: expected a 0/1 mask$"):
        ifgsm(torch.zeros(1, 3, 2, 2), lin, 0.1, 1, mask=torch.full((1, 1, 2, 2), 0.5))


def test_fgsm_zero_gradient_leaves_pixels_and_per_image_eps_keeps_dtype():
    x, w = _mid()
    out = fgsm(x, _lin(w), torch.tensor([0.125, 0.0625], dtype=torch.float64))
    assert out.dtype == torch.float32
    assert torch.equal(out[:, :, 0], x[:, :, 0])  # zero gradient: sign 0, no move
    assert torch.equal(out[0], x[0] + 0.125 * w[0].sign()) and torch.equal(out[1], x[1] + 0.0625 * w[0].sign())


def test_ifgsm_default_alpha_is_eps_over_steps():
    x, w = _mid()
    # one step: alpha = eps / 1
    assert torch.equal(ifgsm(x, _lin(w), 0.125, 1), x + 0.125 * w.sign())
    # four steps, stopped after the first move: alpha = 0.125 / 4
    moved = lambda z: (z != x).flatten(1).any(1)  # noqa: E731
    assert torch.equal(ifgsm(x, _lin(w), 0.125, 4, stop=moved), x + 0.03125 * w.sign())


def test_ifgsm_output_has_no_grad():
    x, w = _mid()
    out = ifgsm(x, _lin(w), 0.125, 2)
    assert not out.requires_grad and out.grad_fn is None


def _start(x, eps, seed):
    r = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
    x_adv = x + (r * 2 - 1) * eps
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def test_random_start_is_the_seeded_uniform_draw_in_the_ball():
    x, w = _mid()
    x = torch.cat([x, torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)]).double()  # float64 images, on the borders
    out = ifgsm(x, _lin(w), 0.1, 0, random_start=True, generator=torch.Generator().manual_seed(5))
    assert out.dtype == torch.float64 and torch.equal(out, _start(x, 0.1, 5))
    assert (out - x).abs().max() <= 0.1 and out.min() == 0.0 and out.max() == 1.0


def test_random_start_respects_the_mask_and_the_global_seed():
    x, w = _mid()
    m = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    m[..., 1:3, 1:3] = 1
    out = ifgsm(x, _lin(w), 0.125, 0, mask=m, random_start=True, generator=torch.Generator().manual_seed(7))
    assert out.dtype == torch.float32
    assert torch.equal(out * (1 - m.float()), x * (1 - m.float()))
    assert torch.equal(out * m.float(), _start(x, 0.125, 7) * m.float())
    with torch.random.fork_rng():
        torch.manual_seed(11)
        a = ifgsm(x, _lin(w), 0.125, 0, random_start=True)
        torch.manual_seed(11)
        b = ifgsm(x, _lin(w), 0.125, 0, random_start=True)
    assert torch.equal(a, b) and not torch.equal(a, x) and (a - x).abs().max() <= 0.125


def test_random_start_with_zero_eps_draws_nothing():
    x, w = _mid()
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    assert torch.equal(ifgsm(x, _lin(w), 0.0, 0, random_start=True, generator=gen), x)
    assert torch.equal(gen.get_state(), state)


def test_stop_rule_exact():
    x, w = _mid()  # two images, three channels
    # stop sees the current iterate; a 0/1 float answer is accepted; image 1 is done after its first move
    seen = []

    def stop(z):
        seen.append(z.clone())
        return torch.tensor([0.0, float((z[1] != x[1]).any())])

    out = ifgsm(x, _lin(w), 0.125, 3, 0.03125, stop=stop)
    assert torch.equal(seen[0], x) and len(seen) == 3
    assert torch.equal(out[0], x[0] + 0.09375 * w[0].sign())
    assert torch.equal(out[1], x[1] + 0.03125 * w[0].sign())
    # everything done at once: the loop ends early and returns the images
    out = ifgsm(x, _lin(w), 0.125, 3, 0.03125, stop=lambda z: torch.ones(z.shape[0], dtype=torch.bool))
    assert torch.equal(out, x)


def test_wrappers_pass_their_parameters():
    x, w = _mid()
    model = torch.nn.Linear(2, 2)
    a = IFGSM(model)
    assert (a.eps, a.steps, a.alpha, a.random_start) == (8 / 255, 10, None, False)
    m = torch.ones(1, 1, 4, 4)
    m[..., 3, :] = 0
    stop = lambda z: torch.tensor([True, False])  # noqa: E731
    out = IFGSM(model, eps=0.125, steps=1, alpha=0.0625)(x, _lin(w), mask=m, stop=stop)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1] + 0.0625 * w[0].sign() * m[0])
    torch.manual_seed(0)
    out = IFGSM(model, eps=0.125, steps=0, random_start=True)(x, _lin(w))
    assert not torch.equal(out, x) and (out - x).abs().max() <= 0.125


def test_wrappers_move_images_to_their_device():
    x, _ = _mid()
    model = torch.nn.Linear(2, 2)
    lin = lambda z: (2 * z).flatten(1).sum(1)  # noqa: E731
    assert FGSM(model, 0.1, device="meta")(x, lin).device.type == "meta"
    assert IFGSM(model, 0.1, 2, device="meta")(x, lin).device.type == "meta"


def test_wrappers_skip_the_model_digest(monkeypatch):
    import facelab.attacks.base as base

    def no_digest(model):
        raise AssertionError("the wrappers must not digest the victim's state")

    monkeypatch.setattr(base, "state_digests", no_digest)
    x, w = _mid()
    model = torch.nn.Linear(2, 2)
    assert torch.equal(FGSM(model, 0.125)(x, _lin(w)), x + 0.125 * w.sign())
    assert torch.equal(IFGSM(model, 0.125, 1)(x, _lin(w)), x + 0.125 * w.sign())


def test_attack_rejects_a_model_that_is_not_a_module_by_name():
    from facelab.attacks.base import Attack
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module \(a FaceDetector\), got function$"):
        Attack(lambda x: x)
