"""facelab.experiments: one module per chapter on the shared base (:mod:`facelab.experiments.base`).

:data:`CHAPTERS` maps a chapter id (the notebook's name) to its module; each module has ``Config``, its
experiment class, ``run(cfg)`` and ``tolerance_floor(card)`` (see book/contributing.md).
"""

CHAPTERS: dict[str, str] = {
    "01_universal_patches": "facelab.experiments.universal_patches",
    "02_lip": "facelab.experiments.lip",
    "03_eyeglasses": "facelab.experiments.eyeglasses",
    "04_attributes": "facelab.experiments.attributes",
    "05_resgn": "facelab.experiments.resgn",
}
