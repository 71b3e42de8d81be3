"""Post-hoc calibration by temperature scaling (Guo et al. 2017, "On calibration of modern neural
networks"): the logits are divided by one scalar T fitted on held-out pixels by minimum negative
log-likelihood. One parameter cannot overfit a few thousand pixels, it keeps every argmax (the maps do
not change) and it is what a softmax maximum of 0.8 needs to mean "right 8 times in 10". Histogram
binning or isotonic regression were not chosen: they fit per bin or per class and need far more held-out
parcels than a small area has, and they can reorder classes.

Expected calibration error (ECE): the pixel-weighted mean gap between confidence and accuracy over
equal-width confidence bins (15, as in Guo et al.).
"""

from __future__ import annotations

import math

import numpy as np
import torch

ECE_BINS = 15
BETA_RANGE = (0.02, 50.0)  # 1 / T searched in this range (T from 0.02 to 50)
MAX_PIXELS = 200_000  # held-out pixels used to fit T at most (a random subset beyond)


def nll(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> float:
    """Mean negative log-likelihood of ``labels [N]`` under ``softmax(beta * logits [N, K])``."""
    z = logits.double() * beta
    return float((torch.logsumexp(z, dim=1) - z.gather(1, labels[:, None]).squeeze(1)).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, tol: float = 1e-4) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)``: a golden-section search on
    beta = 1/T, where the NLL is convex (a log-sum-exp of linear functions of beta minus a linear one)."""
    if len(labels) == 0:
        return 1.0
    lo, hi = (math.log(b) for b in BETA_RANGE)  # searched on log beta: same minimum, scale-free steps
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return float(1.0 / math.exp((lo + hi) / 2))


class Reliability:
    """Reliability-diagram bins accumulated batch by batch (a split of any size): per bin of the top
    probability, the pixel count, the summed confidence and the number right."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.count = np.zeros(bins, np.int64)
        self.conf_sum = np.zeros(bins)
        self.right_sum = np.zeros(bins)

    def add(self, prob: np.ndarray, labels: np.ndarray) -> None:
        """``prob [N, K]`` against ``labels [N]``."""
        if len(prob) == 0:
            return
        prob = np.asarray(prob, dtype=np.float64)
        conf, right = prob.max(axis=1), prob.argmax(axis=1) == np.asarray(labels)
        bins = len(self.count)
        which = np.clip(np.digitize(conf, self.edges[1:-1], right=True), 0, bins - 1)
        self.count += np.bincount(which, minlength=bins)
        self.conf_sum += np.bincount(which, weights=conf, minlength=bins)
        self.right_sum += np.bincount(which, weights=right.astype(np.float64), minlength=bins)

    @classmethod
    def pooled(cls, parts: list[list[dict]]) -> "Reliability":
        """The bins of several :meth:`result` lists (same edges) summed, e.g. one per fold."""
        r = cls(len(parts[0]))
        for bins in parts:
            for i, b in enumerate(bins):
                r.count[i] += b["count"]
                r.conf_sum[i] += b["count"] * (b["confidence"] or 0.0)
                r.right_sum[i] += b["count"] * (b["accuracy"] or 0.0)
        return r

    def result(self) -> dict:
        """``{ece, bins: [{low, high, count, confidence, accuracy}]}``."""
        n = max(int(self.count.sum()), 1)
        ece = float(np.abs(self.conf_sum - self.right_sum).sum() / n)
        return {"ece": ece, "bins": [
            {"low": float(self.edges[i]), "high": float(self.edges[i + 1]), "count": int(c),
             "confidence": None if c == 0 else float(self.conf_sum[i] / c),
             "accuracy": None if c == 0 else float(self.right_sum[i] / c)} for i, c in enumerate(self.count)]}


def reliability(prob: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE and the reliability diagram's bins of ``prob [N, K]`` against ``labels [N]``."""
    r = Reliability(bins)
    r.add(prob, labels)
    return r.result()


def held_out_logits(model: torch.nn.Module, dataset, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N, K], labels [N])`` of the labelled pixels of ``dataset`` (a PatchDataset, unaugmented)
    under ``model`` in eval mode."""
    from torch.utils.data import DataLoader

    from ..data.collate import pad_collate

    model.eval()
    zs, ys = [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate):
            out = model(batch["x"], batch["doy"], batch["mask"])  # [B, K, H, W]
            y = batch["y"]
            sel = y >= 0
            zs.append(out.permute(0, 2, 3, 1)[sel].float())
            ys.append(y[sel])
    if not zs:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    return torch.cat(zs), torch.cat(ys).long()


def calibrate(model: torch.nn.Module, dataset, seed: int = 0) -> dict:
    """Fit T on ``dataset``'s labelled pixels; ``{temperature, ece_before, ece_after, pixels, split}``."""
    z, y = held_out_logits(model, dataset)
    return calibration_of(z, y, dataset.split, seed=seed)


def calibration_of(z: torch.Tensor, y: torch.Tensor, split: str, seed: int = 0) -> dict:
    """Fit T on held-out ``logits [N, K]`` and ``labels [N]`` (at most ``MAX_PIXELS``, a seeded subset)."""
    if len(y) > MAX_PIXELS:
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(y), MAX_PIXELS, replace=False)))
        z, y = z[keep], y[keep]
    t = fit_temperature(z, y)
    before = reliability(torch.softmax(z, 1).numpy(), y.numpy())["ece"] if len(y) else float("nan")
    after = reliability(torch.softmax(z / t, 1).numpy(), y.numpy())["ece"] if len(y) else float("nan")
    return {"temperature": t, "ece_before": before, "ece_after": after, "pixels": int(len(y)), "split": split}
