"""facelab.attacks: adversarial attacks on the model zoo.

* :mod:`facelab.attacks.base` -- :class:`Attack` base class, frozen-victim guard;
* :mod:`facelab.attacks.fgsm` -- FGSM, I-FGSM / PGD on any differentiable loss (functional core + wrappers);
* :mod:`facelab.attacks.patch` -- universal-patch geometry, differentiable pasting, inits, EOT;
* :mod:`facelab.attacks.sample_sets` -- Patch-IoU / -Score / -Score-Focal / -Combination rules, Eq. 1-2;
* :mod:`facelab.attacks.universal_patch` -- :class:`UniversalPatchAttack` (training loop).
"""

from facelab.attacks.base import Attack, ModelChangedError, frozen, state_fingerprint
from facelab.attacks.fgsm import FGSM, IFGSM, fgsm, ifgsm, input_gradient, project_linf
from facelab.attacks.patch import EOT, LOCATIONS, init_patch, partial_mask, paste_patch, patch_boxes
from facelab.attacks.sample_sets import METHODS, adversarial_loss, select_samples
from facelab.attacks.universal_patch import StepStats, UniversalPatchAttack

__all__ = [
    "Attack", "ModelChangedError", "frozen", "state_fingerprint", "EOT", "LOCATIONS", "init_patch", "partial_mask", "paste_patch",
    "patch_boxes", "METHODS", "adversarial_loss", "select_samples", "StepStats",
    "UniversalPatchAttack", "FGSM", "IFGSM", "fgsm", "ifgsm", "input_gradient", "project_linf",
]
