"""facelab.defenses: input-transformation defenses, each a function plus a thin ``nn.Module`` (as kornia).

The pattern every defense follows (chapters add theirs, e.g. a saliency mask or a learned cleaner, the same way):

* one file per defense holding the **functional core** ``name(images, **params) -> images`` (float
  ``[B,3,H,W]`` RGB in [0,1] in and out; it validates ``images`` with
  :func:`facelab.models.base.check_images` and each parameter with a ``ValueError`` that names it) and a
  **module** subclassing :class:`Defense` that stores the parameters, validates them at construction and
  calls the function in ``forward``;
* ``Defense.differentiable`` is False when the backward pass is a straight-through / BPDA estimate
  (:func:`straight_through`; e.g. rounding, JPEG), and ``Defense.random`` is True when every call draws
  anew (attack with EOT); a defense with a strength parameter is the identity at strength zero;
* :func:`defended` ``(defense, victim)`` is ``nn.Sequential(defense, victim)`` that keeps the victim's
  interface (``FaceClassifier``, ``FaceEmbedder`` or ``FaceDetector``), so attacks run on it unchanged.

Defenses here:

* :func:`bit_depth_reduction` / :class:`BitDepthReduction`: feature squeezing's bit depth (Xu et al. 2018), BPDA;
* :func:`median_smooth` / :class:`MedianSmoothing`: feature squeezing's median filter (scipy's semantics);
* :func:`gaussian_blur` / :class:`GaussianBlur`: Gaussian smoothing, differentiable;
* :func:`jpeg_compress` / :class:`JPEGCompression`: JPEG round trip (Guo et al. 2018), BPDA;
* :func:`random_resize_pad` / :class:`RandomResizePad`: Randomization (Xie et al. 2018), random (EOT);
* :func:`resgn_clean` / :class:`ResGNCleaner`: a trained ResGN cleaner (Su et al. 2019), differentiable;
* :class:`~facelab.defenses.saliency_mask.SaliencyMask`: Hayes' saliency mask (guided backprop, μ, n, φ), BPDA.
"""

from facelab.defenses.base import Defense, check_float, check_int, straight_through
from facelab.defenses.bit_depth import BitDepthReduction, bit_depth_reduction
from facelab.defenses.defended import DefendedClassifier, DefendedDetector, DefendedEmbedder, defended
from facelab.defenses.gaussian import GaussianBlur, gaussian_blur
from facelab.defenses.jpeg import JPEGCompression, jpeg_compress
from facelab.defenses.median import MedianSmoothing, median_smooth
from facelab.defenses.randomization import RandomResizePad, random_resize_pad
from facelab.defenses.resgn import ResGNCleaner, resgn_clean

__all__ = [
    "Defense", "straight_through", "check_int", "check_float", "defended", "DefendedClassifier",
    "DefendedEmbedder", "DefendedDetector", "bit_depth_reduction", "BitDepthReduction", "median_smooth",
    "MedianSmoothing", "gaussian_blur", "GaussianBlur", "jpeg_compress", "JPEGCompression", "random_resize_pad",
    "RandomResizePad", "resgn_clean", "ResGNCleaner",
]

from facelab.defenses.saliency_mask import SaliencyMask, guided_relus, saliency_map  # noqa: E402 (chapter 3)

__all__ += ["SaliencyMask", "guided_relus", "saliency_map"]
