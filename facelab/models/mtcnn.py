"""MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded CNNs").

A port of the three-stage cascade shipped in facenet-pytorch 2.5.3 (P-Net 12x12, R-Net 24x24,
O-Net 48x48; weights ``mtcnn/{pnet,rnet,onet}.pt`` are that wheel's state dicts), written as plain
``nn.Module`` s that take facelab images ``[B,3,H,W]`` RGB in ``[0,1]``. Internally the image is
scaled to 0..255 and normalised ``(x - 127.5) / 128`` exactly as facenet-pytorch does, so on
uint8-decoded photos :meth:`MTCNN.detect` reproduces ``facenet_pytorch.MTCNN(keep_all=True).detect``.

Box convention (inherited from the original MATLAB code via facenet-pytorch): detection boxes are
x1 y1 x2 y2 in 1-based pixel indices, i.e. the window a box ``(x1, y1, x2, y2)`` covers is the
0-based continuous region ``[x1-1, x2] x [y1-1, y2]`` (see :func:`crop_windows`).

Two views of the model:

* :meth:`MTCNN.detect` / :meth:`MTCNN.detect_with_landmarks` -- the full, non-differentiable cascade
  (image pyramid, thresholds [0.6, 0.7, 0.7], NMS rules, box regression, ``rerec``, ``pad``);
* differentiable paths for attacks: :meth:`MTCNN.dense` (P-Net over the pyramid as dense anchors)
  and :meth:`MTCNN.window_scores` / :meth:`MTCNN.window_forward` (P-, R- or O-Net on given windows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, roi_align

from facelab import assets
from facelab.models.base import DenseOutput, Detections, FaceDetector, ImageList, as_batches, check_images

__all__ = [
    "PNet",
    "RNet",
    "ONet",
    "MTCNN",
    "WindowOutput",
    "mtcnn",
    "pyramid_scales",
    "crop_windows",
    "rerec",
    "bbreg",
    "nms_min",
]

_STAGE_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


# --------------------------------------------------------------------------------------- networks
class PNet(nn.Module):
    """Proposal net (paper Fig. 2): fully convolutional, 12x12 receptive field, stride 2.

    Input: normalised image ``(x255 - 127.5) / 128``. Output: box offsets [B,4,h,w] and two-class
    logits [B,2,h,w] (class 1 = face).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.conv4_1(x)


class RNet(nn.Module):
    """Refine net (paper Fig. 2) on 24x24 windows. Output: offsets [N,4], logits [N,2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # Caffe/MATLAB (W,H,C) flatten order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.dense5_1(x)


class ONet(nn.Module):
    """Output net (paper Fig. 2) on 48x48 windows. Output: offsets [N,4], landmarks [N,10], logits [N,2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x)


# ------------------------------------------------------------------------------- box utilities
def pyramid_scales(h: int, w: int, min_face_size: float = 20, factor: float = 0.709) -> list[float]:
    """Scales of the image pyramid: 12/min_face_size * factor**k while the short side stays >= 12."""
    m = 12.0 / min_face_size
    minl = min(h, w) * m
    scales, s = [], m
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    return scales


def _area_matrix(n_out: int, n_in: int, like: Tensor) -> Tensor:
    """[n_out, n_in] rows averaging input cells ``floor(i n_in / n_out) .. ceil((i+1) n_in / n_out) - 1``
    (the windows of adaptive average pooling, i.e. ``interpolate(mode="area")``)."""
    i = torch.arange(n_out, device=like.device)
    lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
    j = torch.arange(n_in, device=like.device)
    inside = ((j[None] >= lo[:, None]) & (j[None] < hi[:, None])).to(like.dtype)
    return inside / (hi - lo)[:, None].to(like.dtype)


def _area_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(x, size, mode="area")``; while tracing (``torch.onnx.export``) the same box averages as
    two matrix products, since adaptive pooling by a non-integer factor has no ONNX form (float rounding
    differs from the eager op only in the order of the sums)."""
    if not torch.jit.is_tracing():
        return F.interpolate(x, size=size, mode="area")
    (oh, ow), (ih, iw) = (int(n) for n in size), (int(n) for n in x.shape[-2:])
    return _area_matrix(oh, ih, x) @ x @ _area_matrix(ow, iw, x).t()


def _preprocess(x255: Tensor) -> Tensor:
    return (x255 - 127.5) * 0.0078125


def _face_prob(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=1)[:, 1]


def rerec(boxes: Tensor) -> Tensor:
    """Square boxes [N,>=4] around their centre with side max(w, h) (MTCNN ``rerec``); returns a copy."""
    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def bbreg(boxes: Tensor, reg: Tensor) -> Tensor:
    """Apply R-/O-Net offsets [N,4] (relative to width/height ``x2-x1+1``) to boxes [N,>=4]; copy."""
    boxes = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = torch.stack(
        [boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h, boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h],
        dim=1,
    )
    return boxes


def _pad(boxes: Tensor, w: int, h: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MTCNN ``pad`` as in facenet-pytorch: truncate to int, clamp the 1-based window to the image."""
    b = boxes[:, :4].trunc().int().cpu()
    x, y, ex, ey = b[:, 0].clamp(min=1), b[:, 1].clamp(min=1), b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    return y, ey, x, ex


def nms_min(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Greedy NMS with the "Min" overlap (inter / min(area)) and +1 pixel areas (MTCNN O-Net stage).

    Returns kept indices in descending score order; a box is suppressed when its overlap > threshold.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    b = boxes.double().cpu()
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = torch.argsort(scores.double().cpu(), descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        ih = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        overlap = iw * ih / torch.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def crop_windows(
    images255: Tensor, image_inds: Tensor, boxes: Tensor, size: int, method: str = "exact"
) -> tuple[Tensor, Tensor]:
    """Crop windows ``boxes`` [N,4] (1-based MTCNN convention) of ``images255`` [B,3,H,W] to size x size.

    Returns ``(crops [M,3,size,size], valid [N] bool)`` where M = valid.sum(); both methods are
    differentiable w.r.t. the pixels.

    * ``"exact"``: facenet-pytorch's crop -- ``pad`` (truncate to int, clamp to the image), slice rows
      ``y-1:ey`` / columns ``x-1:ex``, resize with ``interpolate(mode="area")`` (box averaging).
      Windows that are empty after clamping are invalid. Not differentiable w.r.t. the box.
    * ``"roi_align"``: ``torchvision.ops.roi_align(aligned=True, sampling_ratio=-1)`` on the continuous
      region ``[x1-1, x2] x [y1-1, y2]`` clipped to the image (no truncation). Each output cell averages
      ceil(cell size)^2 bilinear samples, which equals area resampling when the window side is an
      integer multiple of ``size`` and approximates it otherwise (sub-pixel box placement, bilinear
      instead of box weights). Batched; windows of zero area after clipping are invalid.
    """
    _, _, h, w = images255.shape
    if method == "exact":
        y, ey, x, ex = _pad(boxes, w, h)
        valid = (ey > y - 1) & (ex > x - 1)
        crops = [
            F.interpolate(images255[int(image_inds[k]), :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]][None], size=(size, size), mode="area")
            for k in torch.nonzero(valid).flatten().tolist()
        ]
        out = torch.cat(crops) if crops else images255.new_zeros(0, 3, size, size)
        return out, valid.to(boxes.device)
    if method == "roi_align":
        region = torch.stack([boxes[:, 0] - 1, boxes[:, 1] - 1, boxes[:, 2], boxes[:, 3]], dim=1).detach()
        region[:, 0::2] = region[:, 0::2].clamp(0, w)
        region[:, 1::2] = region[:, 1::2].clamp(0, h)
        valid = (region[:, 2] > region[:, 0]) & (region[:, 3] > region[:, 1])
        rois = torch.cat([image_inds[valid].to(region)[:, None], region[valid]], dim=1).to(images255)
        out = roi_align(images255, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return out, valid
    raise ValueError(f"crop method: expected 'exact' or 'roi_align', got {method!r}")


def _batched(net: nn.Module, x: Tensor, batch_size: int = 512) -> tuple[Tensor, ...]:
    outs = [net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return tuple(torch.cat(v) for v in zip(*outs))


@dataclasses.dataclass
class WindowOutput:
    """Per-window outputs of one stage: face ``scores`` (softmax prob), face ``logits`` (l_face - l_bg),
    box ``offsets`` [...,4] and, for O-Net, ``landmarks`` [...,5,2] in input pixels (1-based convention)."""

    scores: Tensor
    logits: Tensor
    offsets: Tensor
    landmarks: Tensor | None = None


# ------------------------------------------------------------------------------------- detector
class MTCNN(FaceDetector):
    """The MTCNN cascade as a :class:`FaceDetector` (facenet-pytorch 2.5.3 pipeline, ``keep_all=True``).

    ``score_threshold`` of :meth:`detect` is the O-Net threshold (``thresholds[2]``, default 0.7); as in
    the original it is applied before the final "Min" NMS.
    """

    score_threshold = 0.7
    nms_iou = 0.7

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> None:
        super().__init__()
        if len(thresholds) != 3:
            raise ValueError(f"thresholds: expected 3 values (P-, R-, O-Net), got {list(thresholds)}")
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected 0 < factor < 1, got {factor}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size: expected >= 12 pixels, got {min_face_size}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.score_threshold = self.thresholds[2]
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    def load_weights(self) -> "MTCNN":
        """Load the verified facenet-pytorch state dicts (``mtcnn/{pnet,rnet,onet}.pt``)."""
        for name in ("pnet", "rnet", "onet"):
            state = torch.load(assets.path(f"mtcnn/{name}.pt"), map_location="cpu", weights_only=True)
            getattr(self, name).load_state_dict(state)
        return self

    # --------------------------------------------------------------------- P-Net over the pyramid
    def _pnet_pyramid(self, images: Tensor) -> list[tuple[float, Tensor, Tensor]]:
        """Per scale: (scale, offsets [B,4,h,w], logits [B,2,h,w]) on the area-resized, normalised image."""
        x255 = images * 255
        h, w = images.shape[2:]
        out = []
        for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
            im = _area_resize(x255, (int(h * scale + 1), int(w * scale + 1)))
            reg, logits = self.pnet(_preprocess(im))
            out.append((scale, reg, logits))
        return out

    @staticmethod
    def _pnet_anchors(hh: int, ww: int, scale: float, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Input-pixel windows [hh*ww,4] of P-Net cells (row-major), as facenet's generateBoundingBox."""
        rows, cols = torch.meshgrid(torch.arange(hh, device=device), torch.arange(ww, device=device), indexing="ij")
        bb = torch.stack([cols.flatten(), rows.flatten()], dim=1).to(dtype)
        q1 = ((2 * bb + 1) / scale).floor()
        q2 = ((2 * bb + 12) / scale).floor()
        return torch.cat([q1, q2], dim=1)

    def dense(self, images: Tensor) -> DenseOutput:
        """P-Net (stage 1) over the whole image pyramid as dense anchors, differentiable.

        Anchors are the 12x12 sliding windows (stride 2) of every pyramid scale mapped back to input
        pixels, ``floor((2*cell + 1) / scale)`` .. ``floor((2*cell + 12) / scale)`` (1-based
        convention), concatenated scale by scale (largest scale first), row-major within a scale.
        Boxes apply P-Net's offsets as facenet-pytorch's first stage does (``x1 + dx1 * (x2 - x1)``,
        before ``rerec``); scores are P-Net's face probability, logits ``l_face - l_background``.

        Why P-Net: it is the only stage that looks at every location of the input and whose output
        does not depend on data-dependent selections; R-Net and O-Net only score the windows that
        the earlier stages (plus thresholds and NMS, which are not differentiable) proposed. They are
        available on given windows through :meth:`window_scores`.
        """
        check_images(images)
        b = images.shape[0]
        anchors, boxes, scores, logits = [], [], [], []
        for scale, reg, lg in self._pnet_pyramid(images):
            hh, ww = reg.shape[2:]
            anc = self._pnet_anchors(hh, ww, scale, images.device, reg.dtype)
            off = reg.permute(0, 2, 3, 1).reshape(b, -1, 4)
            wh = (anc[:, 2:] - anc[:, :2]).repeat(1, 2)
            anchors.append(anc.expand(b, -1, -1))
            boxes.append(anc + off * wh)
            scores.append(_face_prob(lg).reshape(b, -1))
            logits.append((lg[:, 1] - lg[:, 0]).reshape(b, -1))
        if not anchors:  # image too small for a single 12x12 window at the first scale
            z = images.new_zeros(b, 0)
            return DenseOutput(images.new_zeros(b, 0, 4), images.new_zeros(b, 0, 4), z, z.clone())
        return DenseOutput(torch.cat(anchors, 1), torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(logits, 1))

    def forward(self, images: Tensor) -> DenseOutput:
        return self.dense(images)

    # ------------------------------------------------------------------------ windows (stage 2/3)
    def window_forward(
        self, images: Tensor, boxes: Tensor | Sequence[Tensor], stage: str = "onet", crop: str = "roi_align"
    ) -> WindowOutput | list[WindowOutput]:
        """Run one stage on given windows, differentiably w.r.t. the pixels.

        ``boxes``: a tensor [B,K,4] (outputs shaped [B,K,...]) or a list of B tensors [K_i,4] (a list
        of per-image outputs), in the 1-based MTCNN convention of :meth:`detect`. Each window is
        cropped (see :func:`crop_windows` for ``crop="exact"`` vs ``"roi_align"``), resized to the
        stage's input size (12/24/48) and scored. Windows that lie fully outside the image get score
        0, logit -inf and zero offsets. ``stage``: "pnet", "rnet" or "onet".
        """
        images = check_images(images)
        if stage not in _STAGE_SIZE:
            raise ValueError(f"stage: expected one of {list(_STAGE_SIZE)}, got {stage!r}")
        as_list = not isinstance(boxes, Tensor)
        if as_list:
            if len(boxes) != images.shape[0]:
                raise ValueError(f"boxes: expected a list of {images.shape[0]} tensors [K,4], got {len(boxes)}")
            for i, bx in enumerate(boxes):
                if not isinstance(bx, Tensor) or bx.dim() != 2 or bx.shape[1] != 4:
                    raise ValueError(f"boxes[{i}]: expected a tensor [K,4] x1 y1 x2 y2")
            counts = [len(bx) for bx in boxes]
            flat = torch.cat([bx.to(images) for bx in boxes]) if boxes else images.new_zeros(0, 4)
        else:
            if boxes.dim() != 3 or boxes.shape[0] != images.shape[0] or boxes.shape[2] != 4:
                raise ValueError(f"boxes: expected shape [B={images.shape[0]},K,4], got {tuple(boxes.shape)}")
            counts = [boxes.shape[1]] * images.shape[0]
            flat = boxes.reshape(-1, 4).to(images)
        if not torch.isfinite(flat).all():
            raise ValueError("boxes: contain NaN or inf")
        inds = torch.repeat_interleave(torch.arange(len(counts), device=images.device), torch.tensor(counts, device=images.device))
        out = self._score_windows(images * 255, inds, flat, stage, crop)
        if as_list:
            parts = [torch.split(t, counts) if t is not None else [None] * len(counts) for t in dataclasses.astuple(out)]
            return [WindowOutput(*fields) for fields in zip(*parts)]
        b, k = images.shape[0], boxes.shape[1]
        return WindowOutput(
            out.scores.reshape(b, k),
            out.logits.reshape(b, k),
            out.offsets.reshape(b, k, 4),
            None if out.landmarks is None else out.landmarks.reshape(b, k, 5, 2),
        )

    def window_scores(
        self, images: Tensor, boxes: Tensor | Sequence[Tensor], stage: str = "onet", crop: str = "roi_align"
    ) -> Tensor | list[Tensor]:
        """Face probability of ``stage`` on the given windows (see :meth:`window_forward`)."""
        out = self.window_forward(images, boxes, stage, crop)
        return [o.scores for o in out] if isinstance(out, list) else out.scores

    def _score_windows(self, x255: Tensor, inds: Tensor, boxes: Tensor, stage: str, crop: str) -> WindowOutput:
        n = boxes.shape[0]
        crops, valid = crop_windows(x255, inds, boxes, _STAGE_SIZE[stage], crop)
        x = _preprocess(crops)
        scores, logits = x255.new_zeros(n), x255.new_full((n,), float("-inf"))
        offsets = x255.new_zeros(n, 4)
        landmarks = x255.new_zeros(n, 5, 2) if stage == "onet" else None
        if len(x) == 0:
            return WindowOutput(scores, logits, offsets, landmarks)
        if stage == "pnet":
            reg, lg = self.pnet(x)
            reg, lg = reg[:, :, 0, 0], lg[:, :, 0, 0]
        elif stage == "rnet":
            reg, lg = _batched(self.rnet, x)
        else:
            reg, pts, lg = _batched(self.onet, x)
            bv = boxes[valid].detach()
            wi = (bv[:, 2] - bv[:, 0] + 1)[:, None]
            hi = (bv[:, 3] - bv[:, 1] + 1)[:, None]
            px = wi * pts[:, :5] + bv[:, :1] - 1
            py = hi * pts[:, 5:] + bv[:, 1:2] - 1
            landmarks = landmarks.index_put((valid,), torch.stack([px, py], dim=2))
        scores = scores.index_put((valid,), _face_prob(lg))
        logits = logits.index_put((valid,), lg[:, 1] - lg[:, 0])
        offsets = offsets.index_put((valid,), reg)
        return WindowOutput(scores, logits, offsets, landmarks)

    # ------------------------------------------------------------------------------ full cascade
    @torch.no_grad()
    def _cascade(self, images: Tensor, thr3: float) -> list[tuple[Tensor, Tensor, Tensor]]:
        """facenet-pytorch's ``detect_face`` on a batch of equal-size images -> per image (boxes, scores, points)."""
        t1, t2, _ = self.thresholds
        bsz, _, h, w = images.shape
        x255 = images * 255
        dev = images.device
        # stage 1: P-Net proposals, NMS 0.5 per scale and image, then 0.7 per image
        cands, cand_inds = [], []
        for scale, reg, lg in self._pnet_pyramid(images):
            probs = _face_prob(lg)
            mask = probs >= t1
            mi = mask.nonzero()
            bb = mi[:, 1:].to(reg.dtype).flip(1)
            q1 = ((2 * bb + 1) / scale).floor()
            q2 = ((2 * bb + 12) / scale).floor()
            box = torch.cat([q1, q2, probs[mask][:, None], reg.permute(1, 0, 2, 3)[:, mask].T], dim=1)
            pick = batched_nms(box[:, :4], box[:, 4], mi[:, 0], 0.5)
            cands.append(box[pick])
            cand_inds.append(mi[pick, 0])
        boxes = torch.cat(cands) if cands else x255.new_zeros(0, 9)
        inds = torch.cat(cand_inds) if cand_inds else torch.zeros(0, dtype=torch.long, device=dev)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[pick], inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack(
            [boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], dim=1
        )
        boxes = rerec(boxes)
        # stage 2: R-Net on exact crops, threshold, NMS 0.7, regression, rerec
        if len(boxes) > 0:
            out = self._score_windows(x255, inds, boxes[:, :4], "rnet", "exact")
            ipass = out.scores > t2
            boxes = torch.cat([boxes[ipass, :4], out.scores[ipass, None]], dim=1)
            inds, mv = inds[ipass], out.offsets[ipass]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
            boxes = rerec(bbreg(boxes[pick], mv[pick]))
            inds = inds[pick]
        # stage 3: O-Net on exact crops, threshold, landmarks, regression, "Min" NMS 0.7
        points = x255.new_zeros(0, 5, 2)
        if len(boxes) > 0:
            out = self._score_windows(x255, inds, boxes[:, :4], "onet", "exact")
            ipass = out.scores > thr3
            boxes = torch.cat([boxes[ipass, :4], out.scores[ipass, None]], dim=1)
            inds, points = inds[ipass], out.landmarks[ipass]
            boxes = bbreg(boxes, out.offsets[ipass])
        results = []
        for b in range(bsz):
            sel = torch.nonzero(inds == b).flatten()
            keep = sel[nms_min(boxes[sel, :4], boxes[sel, 4], 0.7).to(sel.device)] if len(sel) else sel
            results.append((boxes[keep, :4], boxes[keep, 4], points[keep]))
        return results

    @torch.no_grad()
    def detect_with_landmarks(
        self, images: ImageList, score_threshold: float | None = None
    ) -> list[tuple[Detections, Tensor]]:
        """Full cascade per image -> (Detections sorted by descending score, landmarks [K,5,2]).

        Landmarks are (x, y) of left eye, right eye, nose, left and right mouth corner, in the same
        1-based pixel convention as the boxes. ``images``: [B,3,H,W] (processed as one batch, like
        facenet-pytorch's list-of-images path) or a list of [3,H,W] tensors of any sizes.
        """
        thr = self.thresholds[2] if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            for boxes, scores, points in self._cascade(batch, thr):
                order = torch.argsort(scores, descending=True, stable=True)
                results.append((Detections(boxes[order], scores[order]), points[order]))
        return results

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Full cascade (see :meth:`detect_with_landmarks`); ``score_threshold`` is the O-Net threshold."""
        return [d for d, _ in self.detect_with_landmarks(images, score_threshold)]


def mtcnn(min_face_size: float = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709) -> MTCNN:
    """Pretrained MTCNN (facenet-pytorch 2.5.3 weights, verified assets), eval mode."""
    return MTCNN(min_face_size, thresholds, factor).load_weights().eval()
