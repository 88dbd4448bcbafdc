"""ResGN cleaning (Su et al. 2019) as an input-transformation defense: a trained :class:`~facelab.models.resgn.ResGN`
in front of the recognizer.

:func:`resgn_clean` is the functional core (``images`` [B,3,H,W] in [0,1] -> cleaned images in [0,1], the net
in eval mode), :class:`ResGNCleaner` the module. The cleaner is a plain network, so its gradient is the true
one (``differentiable = True``): an attack on ``defended(ResGNCleaner(net), recognizer)`` is a white-box
adaptive attack. :meth:`ResGNCleaner.load` reads a checkpoint written by the chapter's training.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from facelab.defenses.base import Defense
from facelab.models.base import check_images
from facelab.models.resgn import ResGN

__all__ = ["resgn_clean", "ResGNCleaner"]


def resgn_clean(images: Tensor, net: nn.Module) -> Tensor:
    """``net(images)`` with ``net`` in eval mode (batch-norm running statistics); its mode is restored after."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"resgn_clean: net must be an nn.Module (a ResGN), got {type(net).__name__}")
    images = check_images(images)
    was = net.training
    net.eval()
    try:
        return net(images)
    finally:
        net.train(was)


class ResGNCleaner(Defense):
    """Module form of :func:`resgn_clean`; ``net`` is frozen (no gradient to its weights)."""

    differentiable = True
    random = False

    def __init__(self, net: ResGN) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"ResGNCleaner: net must be a ResGN module, got {type(net).__name__}")
        self.net = net.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return resgn_clean(images, self.net)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> ResGNCleaner:
        """A cleaner from a checkpoint ``{"model": state_dict, "blocks": int, "width": int, ...}``."""
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"{path}: ResGN checkpoint not found") from None
        if not isinstance(ck, dict) or not {"model", "blocks", "width"} <= set(ck):
            raise ValueError(f"{path}: not a ResGN checkpoint (needs model, blocks, width)")
        net = ResGN(int(ck["blocks"]), int(ck["width"]))
        net.load_state_dict(ck["model"])
        return cls(net.to(device))

    def extra_repr(self) -> str:
        return f"blocks={getattr(self.net, 'blocks', '?')}, width={getattr(self.net, 'width', '?')}"
