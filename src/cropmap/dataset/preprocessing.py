"""The preprocessing record: every choice that turned imagery into what the model saw (bands, the cloud mask
and its SCL classes, the time grid, the normalisation, where the imagery came from). ``build`` writes it
once into the dataset; ``train`` copies it into the checkpoint; ``predict`` and ``export`` read it from
there: a scene that does not fit it is a one-line error (other SCL classes, other bands) or warning (clouds
masked another way), never a silently different map."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CropmapError
from .composite import DEFAULT_KEEP_SCL  # noqa: F401  (the default record, imported from here by checkpoint)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    bands: tuple[str, ...]
    keep_scl: tuple[int, ...]  # SCL classes kept as clear (used where the imagery has SCL)
    cloud_mask: str  # "scl": clouds masked by SCL classes; "none": the imagery came with clouds already nodata
    period_days: int  # composite period of the time grid
    time_grid: dict = field(default_factory=dict)
    norm: dict = field(default_factory=dict)  # {"mean": [...], "std": [...]} of reflectance per band
    source: dict = field(default_factory=dict)  # the imagery's kind and provider, as far as it says

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bands"], d["keep_scl"] = list(self.bands), list(self.keep_scl)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(bands=tuple(d["bands"]), keep_scl=tuple(int(v) for v in d["keep_scl"]),
                   cloud_mask=str(d["cloud_mask"]), period_days=int(d["period_days"]),
                   time_grid=dict(d.get("time_grid", {})), norm=dict(d.get("norm", {})),
                   source=dict(d.get("source", {})))

    def check_scene(self, stack, where: Path | str, keep_scl=None) -> tuple[int, ...]:
        """The SCL classes to mask ``stack`` with: the record's. Other SCL classes than training used are a
        one-line error naming the scene; a scene masked another way than the training imagery (no SCL where
        training masked by SCL, e.g. a NetCDF whose clouds are already NaN, or the reverse) is a one-line
        warning, since its clouds may be masked differently."""
        if keep_scl is not None and tuple(keep_scl) != self.keep_scl:
            raise CropmapError(f"{where}: SCL classes {' '.join(map(str, keep_scl))} asked, but the model was "
                               f"trained with {' '.join(map(str, self.keep_scl))} (build --keep-scl)")
        has_scl = bool(getattr(stack, "has_scl", True))
        # cloud_mask "unknown": a record from before it was kept, nothing to compare
        if self.cloud_mask == "scl" and not has_scl:
            log.warning("%s: no SCL band, but the model was trained on imagery masked by SCL classes %s: its "
                        "clouds must already be nodata", where, " ".join(map(str, self.keep_scl)))
        elif self.cloud_mask == "none" and has_scl:
            log.warning("%s: the imagery has SCL (masked with classes %s), but the model was trained on imagery "
                        "whose clouds came already masked (no SCL)", where, " ".join(map(str, self.keep_scl)))
        return self.keep_scl


def imagery_source(stack) -> dict:
    """What a stack says of its origin: its kind and, for a fetched cube, its provider and cloud mask."""
    kind = type(stack).__name__
    attrs = getattr(stack, "attrs", {}) or {}
    return {"kind": kind, **{k: attrs[k] for k in ("provider", "cloud_mask") if k in attrs}}
