"""facelab.metrics: the official WIDER FACE AP and the patch paper's P/R@δ, Fβ and AFβ."""

from facelab.metrics.detection import (
    Matches,
    area_fbeta,
    fbeta,
    match_detections,
    precision_recall_at,
    threshold_fbeta_curve,
    wider_detection_metrics,
)
from facelab.metrics.widerface import evaluate, normalize_scores, read_pred_file, read_predictions, voc_ap

__all__ = [
    "Matches", "match_detections", "fbeta", "precision_recall_at", "threshold_fbeta_curve", "area_fbeta",
    "wider_detection_metrics", "evaluate", "read_predictions", "read_pred_file", "normalize_scores", "voc_ap",
]
