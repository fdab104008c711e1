"""Classification figures: accuracy, UA, macro F1, Cohen's kappa, MCC, per-class recall, confusion.

UA (unweighted accuracy, a.k.a. unweighted average recall) is the mean of the per-class
recalls over the classes that occur in the ground truth; a class that never occurs has no
recall (``None`` in JSON) and does not count. Rows of the confusion matrix are true
classes, columns predicted ones, both in the order of ``labels``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, matthews_corrcoef


def classification_figures(y_true, y_pred, labels: list[str]) -> dict:
    """All figures for string (or any hashable) labels ``y_true`` / ``y_pred`` over class list ``labels``."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    unknown = (set(y_true.tolist()) | set(y_pred.tolist())) - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not in the class list {labels}")
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.full(len(labels), np.nan), where=support > 0)
    present = support > 0
    # Macro F1 over the classes present in the truth or in the predictions (sklearn's own convention
    # when ``labels`` is not given), so an absent, never-predicted class does not count as F1 = 0.
    f1_labels = [lab for lab, s, p in zip(labels, support, cm.sum(axis=0), strict=True) if s > 0 or p > 0]
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "ua": float(np.mean(recall[present])),
        "macro_f1": float(f1_score(y_true, y_pred, labels=f1_labels, average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class_recall": {lab: (None if np.isnan(r) else float(r)) for lab, r in zip(labels, recall, strict=True)},
        "support": {lab: int(s) for lab, s in zip(labels, support, strict=True)},
        "labels": list(labels),
        "confusion": cm.astype(int).tolist(),
    }


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA alone (mean recall over the classes present in ``y_true``), for model selection."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))
