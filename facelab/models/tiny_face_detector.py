"""face-api's TinyFaceDetector (``tiny_face_detector_model``), ported to PyTorch.

Follows ``@vladmandic/face-api`` 1.7.15 ``src/tinyFaceDetector`` + ``src/tinyYolov2``
(``withSeparableConvs``, ``isFirstLayerConv2d``, filter sizes 3-16-32-64-128-256-512): pad the image
with zeros at the bottom/right to a square, legacy TF bilinear resize to ``input_size``, subtract the
mean RGB (117.001, 114.697, 97.404) *after* padding, divide by 255; conv0 3x3 'valid' + leaky(0.1),
five separable convs (explicit 1-pixel zero pad, depthwise 3x3, pointwise 1x1, bias -- batch norm is
folded into the stored weights -- leaky 0.1) with TF 'same' 2x2 max pools (stride 2, last stride 1),
1x1 conv to 5 anchors x (x, y, w, h, score). Boxes: YOLOv2 decode ``((col + sigmoid(tx)) / n) * corr``,
``exp(tw) * anchor / n * corr`` with ``corr = input_size / round(side * input_size / max)``; NMS is
face-api's ``ops/nonMaxSuppression`` (IoU > 0.4 suppresses), scores > threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import DenseOutput, Detections, FaceDetector, check_images
from facelab.models.faceapi_weights import load_faceapi_weights
from facelab.models.tf_ops import (conv1x1, max_pool_same, reshaped_dims, square_padding, tf_resize_bilinear,
                                   tfjs_conv_weight, tfjs_depthwise_weight)

__all__ = ["TinyFaceDetector", "tiny_face_detector", "faceapi_nms"]

#: ``tinyFaceDetector/const.ts``
BOX_ANCHORS = ((1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061),
               (4.266906, 5.178857), (9.041765, 10.66308))
MEAN_RGB = (117.001, 114.697, 97.404)
IOU_THRESHOLD = 0.4
LEAKY_SLOPE = 0.10000000149011612


def _leaky(x: Tensor) -> Tensor:
    """face-api ``leaky``: relu(x - 0.1x) + 0.1x (in place: ``x`` is always a fresh conv output)."""
    return F.leaky_relu(x, LEAKY_SLOPE, inplace=True)


class _SeparableConv(nn.Module):
    """pad 1, depthwise 3x3 + pointwise 1x1 (``tf.separableConv2d`` 'valid'), bias, leaky."""

    def __init__(self, w: dict[str, Tensor], prefix: str) -> None:
        super().__init__()
        self.depthwise = nn.Parameter(tfjs_depthwise_weight(w[f"{prefix}/depthwise_filter"]))
        self.pointwise = nn.Parameter(tfjs_conv_weight(w[f"{prefix}/pointwise_filter"]))
        self.bias = nn.Parameter(w[f"{prefix}/bias"].clone())

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.depthwise, padding=1, groups=self.depthwise.shape[0])
        return _leaky(conv1x1(x, self.pointwise, self.bias))


class TinyFaceDetector(FaceDetector):
    """TinyFaceDetector with face-api's weights; ``dense``/``detect`` in input pixels."""

    score_threshold = 0.5
    nms_iou = IOU_THRESHOLD
    max_detections = 10_000  # face-api keeps every NMS survivor

    def __init__(self, input_size: int = 416, weights: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        if not isinstance(input_size, int) or input_size <= 0 or input_size % 32:
            raise ValueError(f"input_size: expected a positive multiple of 32 (as TinyFaceDetectorOptions), "
                             f"got {input_size!r}")
        self.input_size = input_size
        w = load_faceapi_weights("tiny_face_detector_model") if weights is None else weights
        self.conv0_w = nn.Parameter(tfjs_conv_weight(w["conv0/filters"]))
        self.conv0_b = nn.Parameter(w["conv0/bias"].clone())
        self.convs = nn.ModuleList(_SeparableConv(w, f"conv{i}") for i in range(1, 6))
        self.conv8_w = nn.Parameter(tfjs_conv_weight(w["conv8/filters"]))
        self.conv8_b = nn.Parameter(w["conv8/bias"].clone())
        self.register_buffer("box_anchors", torch.tensor(BOX_ANCHORS, dtype=torch.float32))
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))

    def preprocess(self, images: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> network input: pad bottom/right with 0, TF resize, ``(x - mean) / 255``."""
        h, w = images.shape[-2:]
        x = tf_resize_bilinear(images, (self.input_size, self.input_size), pad=square_padding(h, w))
        x = x - self.mean_rgb / 255.0  # (255 x - mean) / 255
        return x.contiguous(memory_format=torch.channels_last)  # the net runs channels-last (faster on CPU)

    def raw(self, x: Tensor) -> Tensor:
        """Network on a preprocessed batch: [B, n, n, 5 anchors, 5] (tx, ty, tw, th, score logit).

        On CPU a batch runs image by image: the activations of one image stay in cache, which is faster
        per image than one big batch.
        """
        if x.device.type == "cpu" and x.shape[0] > 1:
            return torch.cat([self._raw(x[i:i + 1]) for i in range(x.shape[0])], 0)
        return self._raw(x)

    def _raw(self, x: Tensor) -> Tensor:
        out = _leaky(F.conv2d(x, self.conv0_w, self.conv0_b))
        for conv in self.convs:
            out = max_pool_same(out, 2, 2)
            out = conv(out)
        out = max_pool_same(out, 2, 1)
        out = conv1x1(out, self.conv8_w, self.conv8_b)
        b, _, n, _ = out.shape
        return out.permute(0, 2, 3, 1).reshape(b, n, n, len(BOX_ANCHORS), 5)

    def dense(self, images: Tensor) -> DenseOutput:
        """Per-cell-anchor boxes (input pixels, x1 y1 x2 y2), scores and logits; differentiable."""
        images = check_images(images)
        bsz, _, h, w = images.shape
        out = self.raw(self.preprocess(images))
        n = out.shape[1]
        rh, rw = reshaped_dims(h, w, self.input_size)  # JS Math.round (292.5 -> 293)
        corr_x, corr_y = self.input_size / rw, self.input_size / rh
        # relative (to the image) -> pixels: x * W (Box.rescale)
        fx, fy = corr_x * w / n, corr_y * h / n
        grid = torch.arange(n, device=out.device, dtype=out.dtype)
        col = grid.view(1, 1, n, 1)
        row = grid.view(1, n, 1, 1)
        anchors = self.box_anchors.to(out.dtype)
        bw = torch.exp(out[..., 2]) * anchors[:, 0] * fx
        bh = torch.exp(out[..., 3]) * anchors[:, 1] * fy
        x1 = (col + torch.sigmoid(out[..., 0])) * fx - bw / 2
        y1 = (row + torch.sigmoid(out[..., 1])) * fy - bh / 2
        boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], -1).reshape(bsz, -1, 4)
        aw, ah = anchors[:, 0] * fx, anchors[:, 1] * fy
        cx = ((grid.view(1, n, 1) + 0.5) * fx).expand(n, n, len(BOX_ANCHORS))  # [row, col, anchor]
        cy = ((grid.view(n, 1, 1) + 0.5) * fy).expand(n, n, len(BOX_ANCHORS))
        prior = torch.stack([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2], -1).reshape(1, -1, 4)
        logits = out[..., 4].reshape(bsz, -1)
        return DenseOutput(anchors=prior.expand(bsz, -1, -1), boxes=boxes, scores=torch.sigmoid(logits),
                           logits=logits)

    def postprocess(self, boxes: Tensor, scores: Tensor, score_threshold: float) -> Detections:
        """Scores > threshold, then face-api's ``ops/nonMaxSuppression`` (IoU > 0.4 suppresses)."""
        cand = torch.nonzero(scores > score_threshold).flatten()
        keep = cand[faceapi_nms(boxes[cand], scores[cand], self.nms_iou)][: self.max_detections]
        return Detections(boxes[keep], scores[keep])


def faceapi_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """face-api ``ops/nonMaxSuppression``: repeatedly pick the highest score (ties: the later index, as
    ``sort`` ascending + ``pop``) and drop boxes whose IoU with it is > ``iou_threshold``."""
    b = boxes.detach().double().cpu()
    s = scores.detach().double().cpu()
    n = int(s.numel())
    order = sorted(range(n), key=lambda i: (float(s[i]), i))  # ascending, stable
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    remaining = torch.tensor(order, dtype=torch.long)
    pick: list[int] = []
    while remaining.numel():
        cur = int(remaining[-1])
        pick.append(cur)
        rest = remaining[:-1]
        if not rest.numel():
            break
        wh_x = (torch.minimum(b[rest, 2], b[cur, 2]) - torch.maximum(b[rest, 0], b[cur, 0])).clamp(min=0)
        wh_y = (torch.minimum(b[rest, 3], b[cur, 3]) - torch.maximum(b[rest, 1], b[cur, 1])).clamp(min=0)
        inter = wh_x * wh_y
        iou = inter / (area[cur] + area[rest] - inter)
        remaining = rest[iou <= iou_threshold]  # as JS: a NaN IoU (empty boxes) is dropped
    return torch.tensor(pick, dtype=torch.long, device=boxes.device)


def tiny_face_detector(input_size: int = 416) -> TinyFaceDetector:
    """face-api's pretrained TinyFaceDetector at ``input_size`` (multiple of 32; face-api default 416)."""
    return TinyFaceDetector(input_size).eval()
