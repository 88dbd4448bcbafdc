"""facelab.attacks."""
