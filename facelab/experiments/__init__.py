"""facelab.experiments."""
