"""Input-transformation defenses: their defining properties, argument errors, and defended victims that
stay attackable end to end."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from torch import Tensor, nn

from facelab.defenses import (
    BitDepthReduction, Defense, DefendedClassifier, DefendedDetector, DefendedEmbedder, GaussianBlur,
    JPEGCompression, MedianSmoothing, RandomResizePad, bit_depth_reduction, defended, gaussian_blur, jpeg_compress,
    median_smooth, random_resize_pad, straight_through,
)
from facelab.models.base import DenseOutput, FaceClassifier, FaceDetector, FaceEmbedder

#: (function, strength-zero kwargs, typical kwargs)
FUNCTIONS = {
    "bit_depth": (bit_depth_reduction, {"bits": 8}, {"bits": 3}),
    "median": (median_smooth, {"kernel_size": 1}, {"kernel_size": 3}),
    "gaussian": (gaussian_blur, {"sigma": 0.0}, {"sigma": 1.5}),
    "jpeg": (jpeg_compress, None, {"quality": 30}),
    "randomization": (random_resize_pad, {"max_scale": 1.0}, {"max_scale": 1.3}),
}
MODULES = [BitDepthReduction(4), MedianSmoothing(3), GaussianBlur(1.0), JPEGCompression(50), RandomResizePad(1.2, 0)]


def _images(seed: int = 0, shape=(2, 3, 24, 20)) -> Tensor:
    """8-bit images (values k/255), as decoded photos are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


@pytest.mark.parametrize("name", FUNCTIONS)
def test_identity_at_strength_zero_and_output_range(name):
    fn, zero, typical = FUNCTIONS[name]
    x = _images()
    if zero is not None:
        assert torch.equal(fn(x, **zero), x), name
    y = fn(x, **typical)
    assert y.dtype == x.dtype and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)  # it does transform
    if name != "randomization":
        assert y.shape == x.shape
    # a smooth image is changed less than noise by the filters and the codec (not by rounding)
    smooth = torch.linspace(0, 1, 20).view(1, 1, 1, 20).expand(1, 3, 24, 20).contiguous()
    smooth = torch.round(smooth * 255) / 255
    if name in ("median", "gaussian", "jpeg"):
        assert (fn(smooth, **typical) - smooth).abs().mean() < (y - x).abs().mean()


def test_bit_depth_is_idempotent_and_has_the_right_levels():
    x = torch.rand(2, 3, 16, 16)
    for bits in range(1, 9):
        y = bit_depth_reduction(x, bits)
        assert torch.equal(bit_depth_reduction(y, bits), y)
        assert torch.unique(y).numel() <= 2**bits
        assert (y - x).abs().max() <= 0.5 / (2**bits - 1) + 1e-6
    assert set(bit_depth_reduction(x, 1).unique().tolist()) == {0.0, 1.0}


def test_median_matches_scipy_median_filter():
    x = torch.rand(2, 3, 9, 11)
    for k in (2, 3, 4, 5):
        ref = ndi.median_filter(x.numpy(), size=(1, 1, k, k), mode="reflect")
        assert np.array_equal(median_smooth(x, k).numpy(), ref), k
    # a salt-and-pepper pixel disappears under a 3x3 median
    flat = torch.full((1, 3, 7, 7), 0.5)
    flat[..., 3, 3] = 1.0
    assert torch.equal(median_smooth(flat, 3), torch.full_like(flat, 0.5))


def test_gaussian_matches_scipy_gaussian_filter():
    x = torch.rand(1, 3, 17, 13, dtype=torch.float64)
    for sigma in (1.0, 2.0):
        ref = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=3.0)
        assert np.allclose(gaussian_blur(x, sigma).numpy(), ref, atol=1e-10), sigma
    const = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const)


def test_jpeg_quality_orders_the_error():
    torch.manual_seed(0)
    # a smooth image with an edge, where JPEG's error grows as quality drops
    x = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).clone()
    x[:, 0, 10:20, 10:20] = 1.0
    x = torch.round(x * 255) / 255
    errs = [(jpeg_compress(x, q) - x).abs().mean().item() for q in (95, 50, 10)]
    assert errs[0] < errs[1] < errs[2] and errs[0] < 0.01


def test_randomization_draws_and_shapes():
    x = _images(shape=(4, 3, 30, 30))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = random_resize_pad(x, 1.2, g1), random_resize_pad(x, 1.2, g2)
    assert a.shape == (4, 3, 36, 36) and torch.equal(a, b)  # same seed, same draws
    c = random_resize_pad(x, 1.2, g1)
    assert not torch.equal(a, c)  # the next call draws anew
    # every image keeps its pixels: the non-zero area is the resized image, between 30x30 and 35x35
    for i in range(4):
        nz = (a[i].sum(0) > 0).nonzero()
        h = nz[:, 0].max() - nz[:, 0].min() + 1
        assert 28 <= int(h) <= 35
    m = RandomResizePad(1.2, seed=3)
    assert m.random and torch.equal(m(x), RandomResizePad(1.2, seed=3)(x))


@pytest.mark.parametrize("call, match", [
    (lambda x: bit_depth_reduction(x, 0), "bits must be an integer 1..8"),
    (lambda x: bit_depth_reduction(x, 3.5), "bits must be an integer"),
    (lambda x: median_smooth(x, 0), "kernel_size must be an integer >= 1"),
    (lambda x: median_smooth(x, 40), "kernel_size too large"),
    (lambda x: gaussian_blur(x, -1.0), "sigma must be a number in"),
    (lambda x: gaussian_blur(x, 1.0, kernel_size=4), "kernel_size must be odd"),
    (lambda x: jpeg_compress(x, 101), "quality must be an integer 1..100"),
    (lambda x: random_resize_pad(x, 0.9), "max_scale must be a number in"),
    (lambda x: BitDepthReduction(9), "BitDepthReduction: bits"),
    (lambda x: MedianSmoothing(kernel_size=-1), "MedianSmoothing: kernel_size"),
    (lambda x: GaussianBlur(sigma=float("inf")), "GaussianBlur: sigma"),
    (lambda x: JPEGCompression(quality=0), "JPEGCompression: quality"),
    (lambda x: RandomResizePad(max_scale=True), "RandomResizePad: max_scale"),
])
def test_bad_arguments_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: type(m).__name__)
def test_bad_images_are_refused(module):
    with pytest.raises(ValueError, match="grayscale"):
        module(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        module(torch.rand(1, 3, 16, 16) * 2)


def test_straight_through_is_exact_forward_and_identity_backward():
    x = torch.rand(5, requires_grad=True)
    y = torch.round(x.detach() * 7) / 7
    out = straight_through(x, y)
    assert torch.equal(out, y)
    (out * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: type(m).__name__)
def test_gradient_reaches_the_pixels(module):
    x = _images(1).requires_grad_(True)
    module(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert isinstance(module, Defense)


def test_bpda_off_shows_the_masked_gradient():
    x = _images(2).requires_grad_(True)
    assert not bit_depth_reduction(x, 3, bpda=False).requires_grad  # rounding: no gradient at all
    assert not jpeg_compress(x, 50, bpda=False).requires_grad
    # median with BPDA passes the identity's gradient; without it only the selected pixels get one
    g_true = torch.autograd.grad(median_smooth(x, 3).sum(), x)[0]
    g_bpda = torch.autograd.grad(median_smooth(x, 3, bpda=True).sum(), x)[0]
    assert torch.equal(g_bpda, torch.ones_like(x)) and not torch.equal(g_true, g_bpda)
    assert MedianSmoothing(3, bpda=True).differentiable is False and MedianSmoothing(3).differentiable


# ----------------------------------------------------------------------------- defended victims


class _Clf(FaceClassifier):
    def __init__(self):
        super().__init__()
        self.labels = ["dark", "bright"]
        self.fc = nn.Linear(3, 2)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(images.mean((2, 3)))


class _Emb(FaceEmbedder):
    threshold, metric = 0.25, "cosine"

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(2).std(-1)


class _Det(FaceDetector):
    score_threshold = 0.3

    def dense(self, images: Tensor) -> DenseOutput:
        b = images.shape[0]
        s = images.mean((1, 2, 3)).view(b, 1)
        boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).expand(b, 1, 4)
        return DenseOutput(boxes, boxes, s)


def test_defended_classifier_keeps_the_interface_and_is_attackable():
    torch.manual_seed(0)
    victim = _Clf().requires_grad_(False)
    d = defended(MedianSmoothing(3), victim)
    assert isinstance(d, nn.Sequential) and isinstance(d, DefendedClassifier) and isinstance(d, FaceClassifier)
    assert d.labels == ["dark", "bright"] and d.label_index("bright") == 1 and d.multilabel is False
    x = _images(3).requires_grad_(True)
    assert torch.allclose(d(x), victim(median_smooth(x, 3)))
    assert torch.allclose(d.predict(x).sum(1), torch.ones(2))
    # one FGSM step through the defense changes the defended logits in the attacked direction
    loss = d(x)[:, 1].sum()
    (g,) = torch.autograd.grad(loss, x)
    x_adv = (x + 0.05 * g.sign()).clamp(0, 1)
    assert d(x_adv)[:, 1].sum() > loss
    # stacking defenses is again a defended classifier
    dd = defended(BitDepthReduction(5), d)
    assert isinstance(dd, FaceClassifier) and dd.labels == victim.labels
    assert torch.autograd.grad(dd(x).sum(), x)[0].abs().sum() > 0


def test_defended_embedder_uses_the_victims_metric():
    victim = _Emb()
    d = defended(GaussianBlur(1.0), victim)
    assert isinstance(d, DefendedEmbedder) and isinstance(d, FaceEmbedder)
    assert (d.threshold, d.metric, d.normalize) == (0.25, "cosine", False)
    a, b = _images(4), _images(5)
    assert torch.allclose(d.distance(d(a), d(b)), victim.distance(victim(gaussian_blur(a, 1.0)),
                                                                  victim(gaussian_blur(b, 1.0))))
    assert d.match(a, a).all()


def test_defended_detector_detects_on_transformed_images():
    victim = _Det()
    d = defended(BitDepthReduction(1), victim)
    assert isinstance(d, DefendedDetector) and d.score_threshold == 0.3
    x = torch.full((1, 3, 8, 8), 0.45)  # 1 bit: rounds to 0, score 0 < 0.3
    assert len(victim.detect(x)[0]) == 1 and len(d.detect(x)[0]) == 0


def test_defended_real_classifier_end_to_end():
    from facelab.models.expression import expression_classifier

    victim = expression_classifier().requires_grad_(False)
    d = defended(JPEGCompression(60), victim)
    x = _images(6, (1, 3, 64, 56)).requires_grad_(True)
    logits = d(x)
    assert logits.shape == (1, 7)
    (g,) = torch.autograd.grad(logits[0, 1], x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(p.requires_grad for p in d.parameters())


def test_other_victims_give_a_plain_sequential():
    d = defended(GaussianBlur(0.5), nn.Identity())
    assert type(d) is nn.Sequential and len(d) == 2
    with pytest.raises(TypeError, match="nn.Modules"):
        defended(gaussian_blur, nn.Identity())


# ----------------------------------------------------------------------------- exact values (issue 19, mutation)
import re  # noqa: E402

from facelab.defenses import check_float, check_int  # noqa: E402
from facelab.defenses.gaussian import gaussian_kernel1d  # noqa: E402
from facelab.defenses.median import symmetric_pad  # noqa: E402
from facelab.defenses.randomization import _randint  # noqa: E402


def test_check_messages_give_the_function_the_parameter_and_the_span():
    with pytest.raises(ValueError, match=re.escape("f: x must be a number in >= 0.0, got -1")):
        check_float("f", "x", -1, 0.0)
    with pytest.raises(ValueError, match=re.escape("f: x must be a number in [0.0, 1.0], got 2")):
        check_float("f", "x", 2, 0.0, 1.0)
    with pytest.raises(ValueError, match=re.escape("f: k must be an integer 1..8, got 9")):
        check_int("f", "k", 9, 1, 8)
    assert check_float("f", "x", 1, 0.0, 1.0) == 1.0 and check_int("f", "k", 1, 1) == 1


@pytest.mark.parametrize("call, message", [
    (lambda x: bit_depth_reduction(x, 0), "bit_depth_reduction: bits must be an integer 1..8, got 0"),
    (lambda x: median_smooth(x, 0), "median_smooth: kernel_size must be an integer >= 1, got 0"),
    (lambda x: gaussian_blur(x, -1.0), "gaussian_blur: sigma must be a number in >= 0.0, got -1.0"),
    (lambda x: gaussian_blur(x, 1.0, 0), "gaussian_blur: kernel_size must be an integer >= 1, got 0"),
    (lambda x: gaussian_blur(x, 1.0, 4), "gaussian_blur: kernel_size must be odd, got 4"),
    (lambda x: jpeg_compress(x, 101), "jpeg_compress: quality must be an integer 1..100, got 101"),
    (lambda x: random_resize_pad(x, 0.9), "random_resize_pad: max_scale must be a number in [1.0, 4.0], got 0.9"),
    (lambda x: random_resize_pad(x, 4.5), "random_resize_pad: max_scale must be a number in [1.0, 4.0], got 4.5"),
    (lambda x: GaussianBlur(1.0, 0), "GaussianBlur: kernel_size must be an integer >= 1, got 0"),
    (lambda x: GaussianBlur(1.0, 4), "GaussianBlur: kernel_size must be odd, got 4"),
    (lambda x: JPEGCompression(101), "JPEGCompression: quality must be an integer 1..100, got 101"),
    (lambda x: RandomResizePad(4.5), "RandomResizePad: max_scale must be a number in [1.0, 4.0], got 4.5"),
])
def test_error_messages_are_exact(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(torch.rand(1, 3, 8, 8))


def test_module_defaults_and_extra_repr():
    assert (BitDepthReduction().bits, BitDepthReduction().bpda) == (5, True)
    assert MedianSmoothing().kernel_size == 2 and MedianSmoothing(1).kernel_size == 1
    assert (GaussianBlur().sigma, GaussianBlur().kernel_size) == (1.0, None)
    assert GaussianBlur(1.0, 1).kernel_size == 1 and GaussianBlur(2.0, 3).extra_repr() == "sigma=2.0, kernel_size=3"
    assert JPEGCompression().quality == 75 and JPEGCompression(1).quality == 1 and JPEGCompression(100).quality == 100
    assert JPEGCompression(40, bpda=False).extra_repr() == "quality=40, bpda=False"
    r = RandomResizePad()
    assert r.generator is None and r.extra_repr() == "max_scale=1.107, seed=None"
    assert RandomResizePad(1.2, seed=3).extra_repr() == "max_scale=1.2, seed=3"
    assert RandomResizePad(4.0).max_scale == 4.0
    assert random_resize_pad(torch.ones(1, 3, 2, 2), 4.0).shape == (1, 3, 8, 8)


def test_module_forwards_pass_their_parameters():
    x = _images(7, (1, 3, 12, 12)).requires_grad_(True)
    # kernel_size 3 is not the default 7 taps of sigma 1
    assert torch.equal(GaussianBlur(1.0, 3)(x), gaussian_blur(x, 1.0, 3))
    assert not torch.allclose(gaussian_blur(x, 1.0, 3), gaussian_blur(x, 1.0))
    # bpda=False reaches the functions (their default is the other way round)
    assert not BitDepthReduction(3, bpda=False)(x).requires_grad
    assert not JPEGCompression(50, bpda=False)(x).requires_grad
    g = torch.autograd.grad(MedianSmoothing(3, bpda=True)(x).sum(), x)[0]
    assert torch.equal(g, torch.ones_like(x))
    # the functions' defaults: BPDA for rounding and JPEG (identity gradient)
    for y in (bit_depth_reduction(x, 3), jpeg_compress(x, 50)):
        assert torch.equal(torch.autograd.grad(y.sum(), x)[0], torch.ones_like(x))


def test_gaussian_kernel_hand_values():
    # sigma 1, 3 taps: exp(-1/2), 1, exp(-1/2), normalised; computed in float64
    e = np.exp(-0.5)
    k = gaussian_kernel1d(1.0, 3, dtype=torch.float64)
    assert k.dtype == torch.float64 and k.device.type == "cpu"
    assert torch.allclose(k, torch.tensor([e, 1.0, e], dtype=torch.float64) / (1 + 2 * e), rtol=0, atol=1e-15)
    k5 = gaussian_kernel1d(0.7, 5, dtype=torch.float64)
    ref = np.exp(-0.5 * (np.arange(5) - 2.0) ** 2 / 0.49)
    assert np.allclose(k5.numpy(), ref / ref.sum(), rtol=0, atol=1e-15)
    assert gaussian_kernel1d(1.0, 3).dtype == torch.float32
    assert gaussian_kernel1d(1.0, 3, device="meta").device.type == "meta"


def test_gaussian_blur_hand_value_and_kernel_size_one():
    # one bright pixel in a 1x3 row, sigma 1 with 3 taps: the middle pixel keeps 1/(1+2e), replicated borders
    x = torch.zeros(1, 3, 1, 3, dtype=torch.float64)
    x[..., 0, 1] = 1.0
    e = np.exp(-0.5)
    y = gaussian_blur(x, 1.0, kernel_size=3)
    expect = torch.tensor([e, 1.0, e], dtype=torch.float64) / (1 + 2 * e)
    # vertical pass on a 1-row image with replicated borders sums the taps to 1
    assert torch.allclose(y[0, 0, 0], expect, rtol=0, atol=1e-12) and torch.equal(y[0, 0], y[0, 2])
    x = _images(8, (1, 3, 6, 6))
    assert gaussian_blur(x, 2.0, kernel_size=1) is x  # one tap: returned as it is, no convolution


def test_median_edge_cases_and_symmetric_pad():
    t = torch.arange(6.0).view(2, 3)
    assert symmetric_pad(t, 1, 1).tolist() == [[0, 0, 1, 2, 2], [0, 0, 1, 2, 2], [3, 3, 4, 5, 5], [3, 3, 4, 5, 5]]
    # a window of 4 on a 2x2 image pads 2 before (the whole side, mirrored) and 1 after: scipy's result
    x = torch.tensor([[0.1, 0.7], [0.4, 0.9]]).expand(1, 3, 2, 2).contiguous()
    ref = ndi.median_filter(x.numpy(), size=(1, 1, 4, 4), mode="reflect")
    assert np.array_equal(median_smooth(x, 4).numpy(), ref)


def test_bit_depth_levels_hand_values():
    x = torch.tensor([0.0, 0.1, 0.2, 0.49, 0.5, 0.51, 0.9, 1.0]).view(1, 1, 1, 8).expand(1, 3, 1, 8)
    assert bit_depth_reduction(x, 1)[0, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]  # round half to even
    y = bit_depth_reduction(x, 2)[0, 0, 0] * 3
    assert torch.allclose(y, torch.tensor([0.0, 0, 1, 1, 2, 2, 3, 3]))


def test_jpeg_matches_the_opencv_codec_and_keeps_dtype():
    import cv2

    x = _images(9, (2, 3, 16, 16)).double()
    y = jpeg_compress(x, 40)
    assert y.dtype == torch.float64
    for i in range(2):
        u8 = np.ascontiguousarray((x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[..., ::-1])
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, 40])
        ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64) / 255
        assert ok and np.array_equal(y[i].permute(1, 2, 0).numpy(), ref)


def test_jpeg_encoder_failure_is_reported(monkeypatch):
    import facelab.defenses.jpeg as jp

    monkeypatch.setattr(jp.cv2, "imencode", lambda *a, **k: (False, None))
    with pytest.raises(RuntimeError, match="^jpeg_compress: OpenCV could not encode the image$"):
        jpeg_compress(torch.rand(1, 3, 8, 8), 50)


def test_randint_covers_its_inclusive_range():
    g = torch.Generator().manual_seed(0)
    assert {_randint(3, 5, g) for _ in range(200)} == {3, 4, 5}
    assert _randint(2, 2, g) == 2


def test_randomization_sizes_and_offsets():
    # 4x6 ones, max_scale 2: canvas 8x12, new height in 4..7, width round(1.5 h) (4->6, 5->8, 6->9, 7->10)
    x = torch.ones(300, 3, 4, 6)
    y = random_resize_pad(x, 2.0, torch.Generator().manual_seed(0))
    assert y.shape == (300, 3, 8, 12)
    sizes, tops, lefts = set(), set(), set()
    for im in y:
        nz = (im[0] > 0).nonzero()
        top, left = int(nz[:, 0].min()), int(nz[:, 1].min())
        h, w = int(nz[:, 0].max()) - top + 1, int(nz[:, 1].max()) - left + 1
        assert int((im[0] > 0).sum()) == h * w and torch.equal(im[:, top:top + h, left:left + w], torch.ones(3, h, w))
        sizes.add((h, w))
        tops.add(top)
        lefts.add(left)
        assert top <= 8 - h and left <= 12 - w
    assert sizes == {(4, 6), (5, 8), (6, 9), (7, 10)}
    assert min(tops) == 0 and min(lefts) == 0 and max(tops) == 4 and max(lefts) == 6


def test_defended_wiring_and_messages():
    victim, defense = nn.Linear(8, 2), GaussianBlur(1.0)
    d = defended(defense, victim.eval())
    assert d[0] is defense and d[1] is victim and not d.training
    x = _images(10, (1, 3, 8, 8))
    assert torch.equal(defended(BitDepthReduction(2), nn.Identity())(x), bit_depth_reduction(x, 2))
    with pytest.raises(TypeError, match=r"^defended: defense and victim must be nn\.Modules, got function and "
                                        r"Identity$"):
        defended(gaussian_blur, nn.Identity())
    det = defended(BitDepthReduction(1), _Det())
    out = det(torch.full((1, 3, 8, 8), 0.6))  # forward is dense: 1 bit rounds 0.6 to 1
    assert isinstance(out, DenseOutput) and torch.equal(out.scores, torch.ones(1, 1))
