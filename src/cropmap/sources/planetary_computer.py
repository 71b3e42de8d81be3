"""Provider ``planetary-computer``: Microsoft's STAC API, collection ``sentinel-2-l2a`` (ESA's own files),
asset URLs signed with a SAS token (:mod:`.pc_sign`); the offset is known from the processing baseline."""

from __future__ import annotations

from .providers import FetchPlan, FetchRequest
from .stac import Source, baseline_harmonization, plan_stac

STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
COLLECTION = "sentinel-2-l2a"
ASSETS = ("B02", "B03", "B04", "B08")
SCL_ASSET = "SCL"


def source(options: dict) -> Source:
    from .pc_sign import PC_TOKEN_URL, SasSigner

    coll = options.get("collection") or COLLECTION
    signer = SasSigner(coll, options.get("token_url") or PC_TOKEN_URL)
    return Source("planetary-computer", options.get("stac_url") or STAC_URL, coll, ASSETS, SCL_ASSET,
                  baseline_harmonization, signer.sign)


def plan(request: FetchRequest) -> FetchPlan:
    return plan_stac(source(request.options), request)
