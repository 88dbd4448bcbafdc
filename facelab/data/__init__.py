"""facelab.data."""
