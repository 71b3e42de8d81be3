"""Classification metrics from a confusion matrix: OA, mIoU, macro-F1, Cohen's kappa, per class."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """``[K, K]`` int64 counts, rows = reference, columns = prediction; ``ignore_index`` pixels skipped."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    keep = t != ignore_index
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or t.min() < 0 or p.max() >= num_classes or p.min() < 0):
        raise ValueError("labels outside 0..num_classes-1")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, names: list[str] | tuple[str, ...]) -> dict:
    """Overall and per-class metrics. Classes absent from both reference and prediction have no IoU/F1
    and are left out of the means (reported as null), so a small test split is not penalised for them."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    ref = cm.sum(axis=1)  # support
    pred = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(ref > 0, tp / ref, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        union = ref + pred - tp
        iou = np.where(union > 0, tp / union, np.nan)
    present = (ref + pred) > 0
    oa = tp.sum() / total if total else float("nan")
    expected = (ref * pred).sum() / total**2 if total else float("nan")
    kappa = (oa - expected) / (1 - expected) if total and expected < 1 else float("nan")
    per_class = [
        {
            "class": str(n),
            "support": int(ref[i]),
            "precision": float(precision[i]) if present[i] else None,
            "recall": float(recall[i]) if present[i] else None,
            "f1": float(f1[i]) if present[i] else None,
            "iou": float(iou[i]) if present[i] else None,
        }
        for i, n in enumerate(names)
    ]
    return {
        "overall_accuracy": float(oa),
        "miou": float(np.nanmean(iou[present])) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "kappa": float(kappa),
        "pixels": int(total),
        "per_class": per_class,
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "class_names": [str(n) for n in names],
    }


def coarser_confusion(cm: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """``[K, K]`` confusion at a level -> ``[K_p, K_p]`` at a coarser one, given ``parent [K, K_p]``, the 0/1
    matrix sending each class to its parent (see ``nomenclature.coarser_levels``).

    Reference and prediction are both mapped, so a wheat pixel predicted as barley counts as correct at
    the winter-cereal level: ``M^T cm M``."""
    m = np.asarray(parent, dtype=np.int64)
    return m.T @ np.asarray(cm, dtype=np.int64) @ m


class ParcelVotes:
    """Per-parcel pixel counts of reference labels and of predicted classes, accumulated batch by batch.

    A parcel's reference is the majority of its labelled pixels' labels (they share one class) and its
    prediction the majority vote of the predicted classes of the same pixels, as ms-convSTAR reports
    field-level accuracy. Ties go to the lower class index. Parcel ids are those of the dataset's
    ``parcel`` variable (1 + row in the parcel table; 0, no parcel, is skipped).
    """

    def __init__(self, num_parcels: int, num_classes: int) -> None:
        self.k = num_classes
        self.ref = np.zeros((num_parcels + 1, num_classes), np.int64)  # [P + 1, K], row 0 unused
        self.votes = np.zeros((num_parcels + 1, num_classes), np.int64)

    def add(self, parcel: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, ignore_index: int = -1) -> None:
        """``parcel``, ``y_true``, ``y_pred``: arrays of one shape (e.g. ``[B, H, W]``)."""
        pid, t, p = (np.asarray(a).ravel().astype(np.int64) for a in (parcel, y_true, y_pred))
        keep = (pid > 0) & (t != ignore_index)
        pid, t, p = pid[keep], t[keep], p[keep]
        n = self.ref.size
        self.ref += np.bincount(pid * self.k + t, minlength=n).reshape(self.ref.shape)
        self.votes += np.bincount(pid * self.k + p, minlength=n).reshape(self.votes.shape)

    def confusion(self, parent: np.ndarray | None = None) -> np.ndarray:
        """``[K, K]`` confusion of parcels (one count per parcel with a labelled pixel); with ``parent
        [K, K_p]`` the votes are first summed per parent class, so the parcel's coarser prediction is the
        majority of its pixels' coarser predictions."""
        ref, votes = self.ref, self.votes
        if parent is not None:
            m = np.asarray(parent, dtype=np.int64)
            ref, votes = ref @ m, votes @ m
        seen = ref.sum(axis=1) > 0
        k = ref.shape[1]
        return confusion_matrix(ref[seen].argmax(axis=1), votes[seen].argmax(axis=1), k)
