"""facelab.defenses."""
