"""What the real-data scripts share: where ../shared is, where results go, CPU time with children, and the
protocol's statistics (mean ± sd over seeds and folds, paired comparisons against the baseline)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np

# the real data lies beside the checkout (never inside it); CROPMAP_SHARED points elsewhere
SHARED = Path(os.environ.get("CROPMAP_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REAL = SHARED / "data" / "realdata"
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def summarise(runs: list[dict], keys: tuple[str, ...] = ("oa", "macro_f1")) -> dict:
    """Mean and (sample) standard deviation of each metric over runs (folds x seeds, or seeds)."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in runs], dtype=float)
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                  "runs": v.round(4).tolist()}
    return out


def paired(model: list[dict], baseline: list[dict], key: str) -> dict:
    """``model - baseline`` on ``key`` over runs paired by fold and seed (same test set, same seed):
    mean and sd of the differences, wins / ties / losses, and the two-sided Wilcoxon signed-rank p-value
    (None with fewer than 6 non-zero differences, where it cannot reach 5 %)."""
    d = np.array([m[key] - b[key] for m, b in zip(model, baseline, strict=True)], dtype=float)
    p = None
    if (np.abs(d) > 1e-12).sum() >= 6:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(d, zero_method="wilcox").pvalue)
    return {"mean_diff": float(d.mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            "wins": int((d > 1e-12).sum()), "ties": int((np.abs(d) <= 1e-12).sum()), "losses": int((d < -1e-12).sum()),
            "n": len(d), "wilcoxon_p": p, "diffs": d.round(4).tolist()}


def paired_line(name: str, baseline: str, cmp: dict) -> str:
    p = "n/a" if cmp["wilcoxon_p"] is None else f"{cmp['wilcoxon_p']:.3f}"
    return (f"{name} - {baseline}: {cmp['mean_diff']:+.3f} ± {cmp['std_diff']:.3f} over {cmp['n']} paired runs "
            f"(wins {cmp['wins']}, ties {cmp['ties']}, losses {cmp['losses']}; Wilcoxon p {p})")
