"""facelab.data: image I/O, the embedded annotated face set, and strict official-format dataset loaders.

* :mod:`facelab.data.images` -- ``load_image``/``save_image``: ``[3, H, W]`` float RGB in [0, 1].
* :mod:`facelab.data.faces` -- the embedded demo set (9 photos, 30 faces, hand-checked boxes and labels;
  ``bundled_faces()``), the extra set (8 photos, 10 faces of 9 people, 40 CelebA labels; ``extra_faces()``)
  and both together (``all_faces()``: 17 photos, 40 faces, 37 identities).
* :mod:`facelab.data.identities` -- K identities with several views each and a leak-free split.
* :mod:`facelab.data.scenes` -- synthetic multi-face scenes (grid or random placement, exact boxes, COCO json).
* :mod:`facelab.data.fixtures` -- tiny CelebA / PubFig / LFW folders in the official formats, from the faces.
* :mod:`facelab.data.wider`, :mod:`~facelab.data.celeba`, :mod:`~facelab.data.lfw`, :mod:`~facelab.data.pubfig`
  -- a user's copy of WIDER FACE, CelebA, LFW, PubFig-style folders in the official layout.

Malformed, missing or unreadable files raise :class:`DatasetFormatError` naming the file and line.
"""

from facelab.data.celeba import CELEBA_ATTRIBUTES, CelebA
from facelab.data.errors import DatasetFormatError
from facelab.data.faces import ATTRIBUTES, FaceSet, align_face, all_faces, augment, bundled_faces, extra_faces
from facelab.data.images import ImageReadError, load_asset_image, load_image, save_image, to_uint8
from facelab.data.lfw import LFWPairs, parse_lfw_pairs
from facelab.data.pubfig import IdentityFolders
from facelab.data.wider import WiderFace, load_wider_mat, write_wider_predictions

__all__ = [
    "DatasetFormatError", "ImageReadError", "load_image", "load_asset_image", "save_image", "to_uint8",
    "FaceSet", "bundled_faces", "extra_faces", "all_faces", "augment", "align_face", "ATTRIBUTES",
    "WiderFace", "load_wider_mat", "write_wider_predictions",
    "CelebA", "CELEBA_ATTRIBUTES", "LFWPairs", "parse_lfw_pairs", "IdentityFolders",
]
