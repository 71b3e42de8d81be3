"""What the real-data scripts share: where ../shared is, where results go, and CPU time with children."""

from __future__ import annotations

import os
import resource
from pathlib import Path

# the real data lies beside the checkout (never inside it); CROPMAP_SHARED points elsewhere
SHARED = Path(os.environ.get("CROPMAP_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REAL = SHARED / "data" / "realdata"
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
