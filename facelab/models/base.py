"""The shared detector interface and input checks used by every model in the zoo.

All models take float tensors ``[B,3,H,W]``, RGB in ``[0,1]``, and preprocess inside ``forward``
differentiably. Detectors expose two views of one computation:

* :meth:`FaceDetector.dense` -> :class:`DenseOutput`: per-anchor priors, decoded boxes (input pixels,
  x1 y1 x2 y2) and face scores, differentiable w.r.t. the input pixels (attacks use this);
* :meth:`FaceDetector.detect` -> one :class:`Detections` per image after score threshold and NMS
  (evaluation uses this).

Face-analysis victims take face *crops* and come in two kinds, so that attacks and defenses are written
once against the kind, not the net:

* :class:`FaceClassifier`: crops -> logits ``[B,K]`` over :attr:`~FaceClassifier.labels` (identities,
  expressions, attributes); softmax over classes, or independent sigmoids when ``multilabel``;
* :class:`FaceEmbedder`: crops -> descriptors ``[B,D]``, with the net's own :meth:`~FaceEmbedder.distance`
  and match :attr:`~FaceEmbedder.threshold`.

Crops come from a photo with :func:`crop_boxes` (boxes) or :func:`align_faces` (5 landmarks, ArcFace
template), both differentiable w.r.t. the photo's pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

__all__ = [
    "DenseOutput", "Detections", "FaceDetector", "FaceClassifier", "FaceEmbedder", "METRICS", "check_images",
    "check_image", "as_batches", "ImageList", "ARCFACE_TEMPLATE_112", "similarity_matrix", "warp_affine",
    "crop_boxes", "align_faces",
]

ImageList = Tensor | Sequence[Tensor]


@dataclasses.dataclass
class DenseOutput:
    """Dense, differentiable detector output for a batch.

    anchors: [B,A,4] priors in input pixels (x1 y1 x2 y2); boxes: [B,A,4] decoded boxes in input
    pixels; scores: [B,A] face probability per anchor; logits: optional [B,A] pre-sigmoid/softmax
    face logit (when the architecture has one).
    """

    anchors: Tensor
    boxes: Tensor
    scores: Tensor
    logits: Tensor | None = None


@dataclasses.dataclass
class Detections:
    """Post-NMS detections of one image: boxes [K,4] (x1 y1 x2 y2, input pixels), scores [K], descending."""

    boxes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to(self, device: str | torch.device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device))


def check_image(image: Tensor, name: str = "image") -> Tensor:
    """Validate one image tensor [3,H,W] float in [0,1]; clear error otherwise."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [3,H,W] RGB in [0,1], got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(f"{name}: expected shape [3,H,W], got {tuple(image.shape)}")
    return check_images(image[None], name)[0]


def check_images(images: Tensor, name: str = "images") -> Tensor:
    """Validate a batch [B,3,H,W] of float RGB images in [0,1]; return it unchanged.

    Errors name the problem: wrong rank, grayscale (1 channel) or RGBA (4 channels), integer dtype
    (convert with ``/255``), NaN pixels (with the index of the first), values outside [0,1] (inf included),
    zero-sized images. The range and NaN checks share one ``aminmax`` pass (NaN propagates into it).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B,3,H,W] RGB in [0,1], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected shape [B,3,H,W], got {tuple(images.shape)}")
    c = images.shape[1]
    if c == 1:
        raise ValueError(f"{name}: grayscale input (1 channel); repeat it to 3 channels (x.expand(-1,3,-1,-1))")
    if c == 4:
        raise ValueError(f"{name}: RGBA input (4 channels); drop or composite the alpha channel first")
    if c != 3:
        raise ValueError(f"{name}: expected 3 RGB channels in dim 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name}: zero-sized input {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0,1], got {images.dtype} (divide uint8 images by 255)")
    with torch.no_grad():
        lo, hi = (float(v) for v in torch.aminmax(images))  # NaN propagates into both: no second pass
    if lo != lo or hi != hi:
        bad = torch.isnan(images).nonzero()[0].tolist()  # only on the error path
        raise ValueError(f"{name}: NaN pixel at index {tuple(bad)} ({int(torch.isnan(images).sum())} NaN values); "
                         "images must be finite RGB in [0,1] (check the decoding or the preprocessing)")
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{name}: values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]")
    return images


def as_batches(images: ImageList) -> list[Tensor]:
    """Validated batches for ``detect``: one [B,3,H,W] batch, or one [1,3,H,W] batch per list item."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return [check_images(images)]
    if isinstance(images, Tensor):
        return [check_image(images)[None]]
    return [check_image(im, f"images[{i}]")[None] for i, im in enumerate(images)]


class FaceDetector(nn.Module):
    """Base class of every face detector (ported or trained). Subclasses implement :meth:`dense`."""

    #: default score threshold of :meth:`detect`
    score_threshold: float = 0.5
    #: IoU threshold of NMS
    nms_iou: float = 0.5
    #: max detections kept per image
    max_detections: int = 100

    def dense(self, images: Tensor) -> DenseOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: Tensor) -> DenseOutput:
        return self.dense(images)

    def postprocess(self, boxes: Tensor, scores: Tensor, score_threshold: float) -> Detections:
        """Threshold, NMS and sort one image's dense output. Override to match an original's NMS."""
        keep = scores >= score_threshold
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes.float(), scores.float(), self.nms_iou)[: self.max_detections]
        return Detections(boxes[keep], scores[keep])

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Post-NMS detections per image, sorted by descending score.

        ``images``: a tensor [B,3,H,W] or a list of [3,H,W] tensors of different sizes.
        """
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            out = self.dense(batch)
            for b in range(batch.shape[0]):
                results.append(self.postprocess(out.boxes[b], out.scores[b], thr))
        return results


class FaceClassifier(nn.Module):
    """Base class of face classifiers: face crops ``[B,3,H,W]`` RGB in [0,1] -> logits ``[B,K]``.

    A subclass sets :attr:`labels` (the K class names, in logit order) and :attr:`multilabel`, and
    implements :meth:`forward`: validate the input (:func:`check_images`), preprocess (resize,
    normalise) differentiably inside, return pre-softmax / pre-sigmoid logits. Crops of any size are
    accepted; each net resizes them as it was trained to.
    """

    #: class names, in the order of the logits
    labels: list[str]
    #: ``True``: K independent yes/no outputs (sigmoid, e.g. attributes); ``False``: one class of K (softmax)
    multilabel: bool = False

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def label_index(self, label: str) -> int:
        """Index of class ``label`` in the logits; ``KeyError`` listing the labels otherwise."""
        try:
            return list(self.labels).index(label)
        except ValueError:
            raise KeyError(f"{type(self).__name__}: unknown label {label!r}; labels are {list(self.labels)}") from None

    def predict(self, images: Tensor) -> Tensor:
        """Probabilities ``[B,K]``: softmax over the classes, or per-label sigmoids when ``multilabel``."""
        logits = self(images)
        return torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=-1)

    def classify(self, images: Tensor) -> Tensor:
        """Decisions: class index ``[B]`` (argmax), or ``[B,K]`` bool (logit > 0, i.e. p > 0.5) when ``multilabel``."""
        logits = self(images)
        return logits > 0 if self.multilabel else logits.argmax(-1)


#: distance functions of :attr:`FaceEmbedder.metric`: ``a, b`` ``[B,D]`` -> ``[B]``
METRICS = {
    "euclidean": lambda a, b: torch.linalg.vector_norm(a - b, dim=-1),
    "squared_euclidean": lambda a, b: (a - b).pow(2).sum(-1),
    "cosine": lambda a, b: 1 - F.cosine_similarity(a, b, dim=-1, eps=1e-12),
}


class FaceEmbedder(nn.Module):
    """Base class of face embedders: face crops ``[B,3,H,W]`` RGB in [0,1] -> descriptors ``[B,D]``.

    A subclass implements :meth:`forward` (validate with :func:`check_images`, preprocess inside,
    differentiable) and sets :attr:`threshold`, :attr:`metric` and :attr:`normalize`. Two faces match
    when ``distance < threshold``. The gradient of the Euclidean distance is 0 where ``a == b``: a
    dodging attack starting from the clean image needs a random start.
    """

    #: match when ``distance(a, b) < threshold`` (in the units of :attr:`metric`)
    threshold: float
    #: one of :data:`METRICS`: "euclidean", "squared_euclidean" or "cosine" (``1 - cos``)
    metric: str = "euclidean"
    #: whether :meth:`forward` returns unit-norm descriptors
    normalize: bool = False

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """The net's own distance ``[B]`` between descriptors ``a`` and ``b`` ``[B,D]`` (broadcasts over B)."""
        if a.shape[-1] != b.shape[-1] or a.dim() != 2 or b.dim() != 2:
            raise ValueError(f"distance: expected descriptors [B,D] and [B,D], got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        if self.metric not in METRICS:
            raise ValueError(f"{type(self).__name__}.metric must be one of {list(METRICS)}, got {self.metric!r}")
        return METRICS[self.metric](a, b)

    def match(self, a_images: Tensor, b_images: Tensor) -> Tensor:
        """``[B]`` bool: is face ``a_images[i]`` the same person as ``b_images[i]`` (distance < threshold)."""
        return self.distance(self(a_images), self(b_images)) < self.threshold


# ----------------------------------------------------------------------------- differentiable face crops

#: ArcFace / insightface 112x112 positions of the 5 landmarks (left eye, right eye, nose, mouth left, right)
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041),
)


def similarity_matrix(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) ``[K,2,3]`` taking points ``src``
    ``[K,N,2]`` onto ``dst`` ``[N,2]`` or ``[K,N,2]`` (x, y pixels); the Umeyama fit without reflection."""
    src = src.to(torch.float64)
    dst = dst.to(device=src.device, dtype=torch.float64).expand_as(src)
    sc, dc = src - src.mean(1, keepdim=True), dst - dst.mean(1, keepdim=True)
    zs, zd = torch.complex(sc[..., 0], sc[..., 1]), torch.complex(dc[..., 0], dc[..., 1])
    denom = zs.abs().pow(2).sum(1)
    if bool((denom <= 1e-12).any()):
        raise ValueError("similarity_matrix: source points coincide; cannot fit a similarity transform")
    a = (zs.conj() * zd).sum(1) / denom  # [K] complex: scale * exp(i * angle)
    ms, md = src.mean(1), dst.mean(1)
    tx = md[:, 0] - (a.real * ms[:, 0] - a.imag * ms[:, 1])
    ty = md[:, 1] - (a.imag * ms[:, 0] + a.real * ms[:, 1])
    row0 = torch.stack([a.real, -a.imag, tx], -1)
    row1 = torch.stack([a.imag, a.real, ty], -1)
    return torch.stack([row0, row1], 1)


def warp_affine(image: Tensor, matrices: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Crops ``[K,3,h,w]`` of ``image`` ``[3,H,W]``: output pixel (u, v) samples the photo at ``M^-1 (u, v)``.

    ``matrices`` ``[K,2,3]`` map photo pixels to crop pixels (OpenCV ``warpAffine`` convention, pixel
    centres at integers); bilinear, zero outside the photo. Differentiable w.r.t. the pixels and matrices.
    """
    image = check_image(image)
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"warp_affine: size must be positive, got {size}")
    if matrices.dim() != 3 or matrices.shape[1:] != (2, 3):
        raise ValueError(f"warp_affine: matrices must be [K,2,3], got {tuple(matrices.shape)}")
    m = matrices.to(torch.float64)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # crop pixels -> photo pixels
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=m.device),
                          torch.arange(w, dtype=torch.float64, device=m.device), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).view(1, h * w, 3)
    src = uv1 @ inv.transpose(1, 2)  # [K, h*w, 2] photo pixels
    H, W = image.shape[1:]
    scale = src.new_tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)])
    grid = (src * scale - 1).view(-1, h, w, 2).to(image.dtype)
    batch = image[None].expand(grid.shape[0], -1, -1, -1)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def crop_boxes(image: Tensor, boxes: Tensor | Sequence[Sequence[float]], size: int | tuple[int, int],
               grow: float = 0.0) -> Tensor:
    """Fixed-size crops ``[K,3,h,w]`` of ``boxes`` ``[K,4]`` (x1 y1 x2 y2) of ``image`` ``[3,H,W]``.

    Each box, grown by ``grow`` times its width/height on every side, is stretched to
    ``size`` (no rotation); bilinear, zero outside the photo, differentiable w.r.t. the pixels. For
    face-api's own crop rule (integer box, variable size) use :func:`facelab.models.faceapi_crop.crop_faces`.
    """
    b = torch.as_tensor(boxes, dtype=torch.float64, device=image.device).reshape(-1, 4)
    if not bool(torch.isfinite(b).all()) or bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
        raise ValueError(f"crop_boxes: boxes must be finite x1 y1 x2 y2 with x2 > x1 and y2 > y1, got {b.tolist()}")
    if not grow > -0.5:
        raise ValueError(f"crop_boxes: grow must be > -0.5 (a fraction of the box per side), got {grow}")
    h, w = (size, size) if isinstance(size, int) else size
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    x1, y1 = b[:, 0] - grow * bw, b[:, 1] - grow * bh
    sx, sy = w / (bw * (1 + 2 * grow)), h / (bh * (1 + 2 * grow))
    zero = torch.zeros_like(sx)
    m = torch.stack([torch.stack([sx, zero, -x1 * sx], -1), torch.stack([zero, sy, -y1 * sy], -1)], 1)
    return warp_affine(image, m, (h, w))


def align_faces(image: Tensor, landmarks: Tensor, size: int = 112,
                template: Sequence[Sequence[float]] = ARCFACE_TEMPLATE_112) -> Tensor:
    """Aligned crops ``[K,3,size,size]``: the similarity transform taking each face's 5 ``landmarks``
    ``[K,5,2]`` onto ``template`` (ArcFace's 112x112 positions, scaled to ``size``); differentiable."""
    pts = torch.as_tensor(landmarks, dtype=torch.float64, device=image.device)
    pts = pts[None] if pts.dim() == 2 else pts
    tpl = torch.as_tensor(template, dtype=torch.float64, device=image.device) * (size / 112.0)
    if pts.dim() != 3 or pts.shape[1:] != tpl.shape:
        raise ValueError(f"align_faces: landmarks must be [K,{tpl.shape[0]},2], got {tuple(pts.shape)}")
    return warp_affine(image, similarity_matrix(pts, tpl), size)
