"""facelab: face models, attacks, defenses, data and metrics for the replication book."""

__version__ = "0.1.0"
