"""facelab.attacks: adversarial attacks on the model zoo.

* :mod:`facelab.attacks.base` -- :class:`Attack` base class, frozen-victim guard;
* :mod:`facelab.attacks.fgsm` -- FGSM, I-FGSM / PGD on any differentiable loss (functional core + wrappers);
* :mod:`facelab.attacks.patch` -- universal-patch geometry, differentiable pasting, inits, EOT;
* :mod:`facelab.attacks.sample_sets` -- Patch-IoU / -Score / -Score-Focal / -Combination rules, Eq. 1-2;
* :mod:`facelab.attacks.universal_patch` -- :class:`UniversalPatchAttack` (training loop);
* :mod:`facelab.attacks.lip` -- IMP / LP / LIP-A / LIP-H on a detector's dense output, per-instance gradients;
* :mod:`facelab.attacks.erf` -- effective vs theoretical receptive fields of a detector's anchors.
"""

from facelab.attacks.base import Attack, ModelChangedError, frozen, state_fingerprint
from facelab.attacks.fgsm import FGSM, IFGSM, fgsm, ifgsm, input_gradient, project_linf
from facelab.attacks.patch import EOT, LOCATIONS, init_patch, partial_mask, paste_patch, patch_boxes
from facelab.attacks.sample_sets import METHODS, adversarial_loss, select_samples
from facelab.attacks.universal_patch import StepStats, UniversalPatchAttack
from facelab.attacks.lip import instance_gradients, lip_attack

__all__ = [
    "Attack", "ModelChangedError", "frozen", "state_fingerprint", "EOT", "LOCATIONS", "init_patch", "partial_mask", "paste_patch",
    "patch_boxes", "METHODS", "adversarial_loss", "select_samples", "StepStats",
    "UniversalPatchAttack", "FGSM", "IFGSM", "fgsm", "ifgsm", "input_gradient", "project_linf",
    "lip_attack", "instance_gradients",
]

from facelab.attacks.eyeglasses import EyeglassAttack, eyeglass_attack, glasses_mask, wear_glasses  # noqa: E402 (chapter 3)

__all__ += ["EyeglassAttack", "eyeglass_attack", "glasses_mask", "wear_glasses"]

from facelab.attacks.ffa import FFA, ffa, ffa_direction, fgs, fgs_direction  # noqa: E402 (chapter 4)
from facelab.attacks.line_search import iterative_flip, line_search, line_search_naive  # noqa: E402 (chapter 4)

__all__ += ["FFA", "ffa", "ffa_direction", "fgs", "fgs_direction", "iterative_flip", "line_search", "line_search_naive"]
