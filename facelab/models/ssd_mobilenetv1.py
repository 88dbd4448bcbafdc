"""face-api's SSD-MobileNetV1 face detector (``ssd_mobilenetv1_model``), ported to PyTorch.

Follows ``@vladmandic/face-api`` 1.7.15 ``src/ssdMobilenetv1``: pad the image with zeros at the
bottom/right to a square, legacy TF bilinear resize to 512x512, ``x/127.5 - 1``; MobileNetV1 (conv
+ folded-BN offset + ReLU6, depthwise conv + BatchNorm(eps 1e-3) + ReLU6, TF 'same' padding);
six box predictors (3 anchors on the 32x32 map of conv 11, 6 on each of 16, 8, 4, 2, 1); boxes decoded
against the 5118 stored priors ``Output/extra_dim`` (y,x order, variances 10/10/5/5); score =
sigmoid(class logit 1); face-api's own greedy NMS (IoU > 0.5 suppresses, score > threshold, at most
100), boxes clipped to the padded square and mapped back to input pixels.

Speed (CPU): the depthwise BatchNorm is folded into the filters at load time, the pad + resize is one
banded interpolation-matrix product (:func:`facelab.models.tf_ops.tf_resize_bilinear` with ``pad``), the
net runs channels-last with 1x1 convolutions as matrix products and in-place ReLU6, and a CPU batch
runs image by image (cache locality); results equal the plain formulation up to float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import DenseOutput, Detections, FaceDetector, ImageList, as_batches, check_images
from facelab.models.faceapi_weights import load_faceapi_weights
from facelab.models.tf_ops import (conv1x1, conv2d_same, greedy_nms, reshaped_dims, square_padding, tf_resize_bilinear,
                                   tfjs_conv_weight, tfjs_depthwise_weight)

__all__ = ["SsdMobilenetV1", "ssd_mobilenetv1", "faceapi_ssd_nms"]

INPUT_SIZE = 512
BN_EPS = 0.0010000000474974513
_STRIDE2_LAYERS = {2, 4, 6, 12}
_NUM_ANCHORS = (3, 6, 6, 6, 6, 6)


def _relu6(x: Tensor) -> Tensor:
    """ReLU6, in place unless autograd records it: the in-place op's backward (``hardtanh_backward`` against the
    channels-last output of :func:`conv1x1`) made a patch-training step about 2x slower (benchmarks/
    profile_chapter1.py); the values are the same either way."""
    return F.relu6(x, inplace=not (x.requires_grad and torch.is_grad_enabled()))


class _PointwiseConv(nn.Module):
    """conv (TF 'same') + batch_norm_offset + ReLU6 (``pointwiseConvLayer``)."""

    def __init__(self, w: dict[str, Tensor], prefix: str, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(tfjs_conv_weight(w[f"{prefix}/weights"]))
        self.bias = nn.Parameter(w[f"{prefix}/convolution_bn_offset"].clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.shape[-1] == 1:
            x = conv1x1(x, self.weight, self.bias, self.stride)
        else:
            x = conv2d_same(x, self.weight, self.bias, self.stride)
        return _relu6(x)


class _DepthwiseConv(nn.Module):
    """depthwise conv (TF 'same') + BatchNorm + ReLU6 (``depthwiseConvLayer``).

    The inference BatchNorm ``(y - mean) * gamma / sqrt(var + eps) + beta`` is folded into the filter
    and a bias once at load time (float64 arithmetic, then float32).
    """

    def __init__(self, w: dict[str, Tensor], prefix: str, stride: int) -> None:
        super().__init__()
        self.stride = stride
        gamma = w[f"{prefix}/BatchNorm/gamma"].double()
        var = w[f"{prefix}/BatchNorm/moving_variance"].double()
        mul = gamma / torch.sqrt(var + BN_EPS)
        filt = tfjs_depthwise_weight(w[f"{prefix}/depthwise_weights"]).double()
        bias = w[f"{prefix}/BatchNorm/beta"].double() - w[f"{prefix}/BatchNorm/moving_mean"].double() * mul
        self.weight = nn.Parameter((filt * mul.view(-1, 1, 1, 1)).float())
        self.bias = nn.Parameter(bias.float())

    def forward(self, x: Tensor) -> Tensor:
        x = conv2d_same(x, self.weight, self.bias, self.stride, groups=self.weight.shape[0])
        return _relu6(x)


class _BoxPredictor(nn.Module):
    """1x1 conv box encoding [B,HWA,4] and class logits [B,HWA,3] (``boxPredictionLayer``)."""

    def __init__(self, w: dict[str, Tensor], idx: int) -> None:
        super().__init__()
        p = f"Prediction/BoxPredictor_{idx}"
        self.box_w = nn.Parameter(tfjs_conv_weight(w[f"{p}/BoxEncodingPredictor/weights"]))
        self.box_b = nn.Parameter(w[f"{p}/BoxEncodingPredictor/biases"].clone())
        self.cls_w = nn.Parameter(tfjs_conv_weight(w[f"{p}/ClassPredictor/weights"]))
        self.cls_b = nn.Parameter(w[f"{p}/ClassPredictor/biases"].clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = x.shape[0]
        box = conv1x1(x, self.box_w, self.box_b).permute(0, 2, 3, 1).reshape(b, -1, 4)
        cls = conv1x1(x, self.cls_w, self.cls_b).permute(0, 2, 3, 1).reshape(b, -1, 3)
        return box, cls


class SsdMobilenetV1(FaceDetector):
    """SSD-MobileNetV1 face detector with face-api's weights; ``dense``/``detect`` in input pixels."""

    score_threshold = 0.5
    nms_iou = 0.5
    max_detections = 100

    def __init__(self, weights: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        w = load_faceapi_weights("ssd_mobilenetv1_model") if weights is None else weights
        self.conv0 = _PointwiseConv(w, "MobilenetV1/Conv2d_0_pointwise", 2)
        self.pairs = nn.ModuleList()
        for i in range(1, 14):
            stride = 2 if i in _STRIDE2_LAYERS else 1
            self.pairs.append(nn.Sequential(
                _DepthwiseConv(w, f"MobilenetV1/Conv2d_{i}_depthwise", stride),
                _PointwiseConv(w, f"MobilenetV1/Conv2d_{i}_pointwise", 1),
            ))
        self.extra = nn.ModuleList(
            _PointwiseConv(w, f"Prediction/Conv2d_{i}_pointwise", 2 if i % 2 else 1) for i in range(8))
        self.predictors = nn.ModuleList(_BoxPredictor(w, i) for i in range(6))
        # priors, normalised (ymin, xmin, ymax, xmax) in the padded 512 square
        self.register_buffer("priors", w["Output/extra_dim"].reshape(-1, 4).clone())

    # -- network ---------------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> network input [B,3,512,512] in [-1,1] (pad bottom/right with 0, TF resize)."""
        h, w = images.shape[-2:]
        x = tf_resize_bilinear(images, (INPUT_SIZE, INPUT_SIZE), pad=square_padding(h, w))
        x = x * (255.0 / 127.5) - 1.0  # (255 x) / 127.5 - 1
        return x.contiguous(memory_format=torch.channels_last)  # the net runs channels-last (faster on CPU)

    def raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Network on a preprocessed batch: box encodings [B,5118,4] and class logits [B,5118,3].

        On CPU a batch runs image by image: the activations of one image stay in cache, which is faster
        per image than one big batch.
        """
        if x.device.type == "cpu" and x.shape[0] > 1:
            boxes, classes = zip(*(self._raw(x[i:i + 1]) for i in range(x.shape[0])))
            return torch.cat(boxes, 0), torch.cat(classes, 0)
        return self._raw(x)

    def _raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv0(x)
        conv11 = out
        for i, pair in enumerate(self.pairs, start=1):
            out = pair(out)
            if i == 11:
                conv11 = out
        feats = [conv11, out]
        y = out
        for i, layer in enumerate(self.extra):
            y = layer(y)
            if i % 2 == 1:
                feats.append(y)
        boxes, classes = zip(*(pred(f) for pred, f in zip(self.predictors, feats)))
        return torch.cat(boxes, 1), torch.cat(classes, 1)

    @staticmethod
    def decode(priors: Tensor, enc: Tensor) -> Tensor:
        """``decodeBoxesLayer``: centre/size offsets /10, log-sizes /5; (ymin, xmin, ymax, xmax) normalised."""
        sizes = priors[..., 2:] - priors[..., :2]
        centers = priors[..., :2] + sizes / 2
        half = torch.exp(enc[..., 2:] / 5) * sizes / 2
        c = enc[..., :2] / 10 * sizes + centers
        return torch.cat([c - half, c + half], -1)

    @staticmethod
    def pixel_scale(height: int, width: int) -> tuple[float, float]:
        """Normalised (y, x) -> input pixels, as ``locateFaces``: ``512/round(side*512/max) * side``."""
        rh, rw = reshaped_dims(height, width, INPUT_SIZE)
        return INPUT_SIZE / rh * height, INPUT_SIZE / rw * width

    def _dense(self, images: Tensor) -> tuple[DenseOutput, Tensor]:
        images = check_images(images)
        h, w = images.shape[-2:]
        enc, cls = self.raw(self.preprocess(images))
        norm = self.decode(self.priors, enc)  # [B,A,4] y1 x1 y2 x2
        sy, sx = self.pixel_scale(h, w)
        to_px = norm.new_tensor([sx, sy, sx, sy])
        xyxy = norm[..., [1, 0, 3, 2]]
        raw_px = xyxy * to_px
        boxes = xyxy.clamp(0.0, 1.0) * to_px
        anchors = (self.priors[:, [1, 0, 3, 2]] * to_px).expand(images.shape[0], -1, -1)
        logits = cls[..., 1]
        return DenseOutput(anchors=anchors, boxes=boxes, scores=torch.sigmoid(logits), logits=logits), raw_px

    def dense(self, images: Tensor) -> DenseOutput:
        """Per-prior boxes (clipped to the padded square, input pixels), scores and logits; differentiable."""
        return self._dense(images)[0]

    # -- post-processing -------------------------------------------------------------------------
    def postprocess(self, boxes: Tensor, scores: Tensor, score_threshold: float,
                    nms_boxes: Tensor | None = None) -> Detections:
        """face-api's SSD NMS on ``nms_boxes`` (unclipped, default ``boxes``), returning ``boxes`` rows."""
        keep = faceapi_ssd_nms(boxes if nms_boxes is None else nms_boxes, scores, self.max_detections,
                               self.nms_iou, score_threshold)
        return Detections(boxes[keep], scores[keep])

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Post-NMS detections per image, as ``locateFaces`` (NMS on unclipped boxes, then clipped)."""
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            out, raw_px = self._dense(batch)
            for b in range(batch.shape[0]):
                results.append(self.postprocess(out.boxes[b], out.scores[b], thr, raw_px[b]))
        return results


def faceapi_ssd_nms(boxes: Tensor, scores: Tensor, max_output: int, iou_threshold: float,
                    score_threshold: float) -> Tensor:
    """face-api ``ssdMobilenetv1/nonMaxSuppression``: :func:`~facelab.models.tf_ops.greedy_nms` dropping a
    candidate whose IoU with a kept box is > ``iou_threshold``."""
    return greedy_nms(boxes, scores, max_output, iou_threshold, score_threshold, suppress_equal=False)


def ssd_mobilenetv1() -> SsdMobilenetV1:
    """face-api's pretrained SSD-MobileNetV1 face detector (eval mode)."""
    return SsdMobilenetV1().eval()
