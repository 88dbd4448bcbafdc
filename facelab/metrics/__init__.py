"""facelab.metrics."""
