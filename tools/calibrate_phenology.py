"""Derive the demo generator's crop curves from real Sentinel-2 series at RPG 2023 parcels.

Run once by hand; its output is pasted into ``src/cropmap/demo/phenology_table.py``:

    python tools/calibrate_phenology.py ../shared/data/realdata/fr-rpg-points/fr2023_dekad.npz

Source: WorldCereal point extractions labelled from the French RPG 2023 (western France, 10-day
composites, MIT / Etalab 2.0; see that folder's PROVENANCE.txt). For each class and each 10-day step
of 2023 it prints the median and a robust spread (IQR / 1.349) of B2, B3, B4, B8 in DN (reflectance
x 10000), over cloud-free observations, smoothed over three steps.
"""

from __future__ import annotations

import sys

import numpy as np

# WorldCereal label -> RPG 2023 crop code (CODE_CULTU)
LABEL_TO_CODE = {
    "winter_common_soft_wheat": "BTH",
    "maize": "MIS",
    "grain_maize_corn_popcorn": "MIS",
    "winter_common_barley": "ORH",
    "spring_common_barley": "ORP",
    "winter_triticale": "TTH",
    "winter_rapeseed_rape": "CZH",
    "sunflower": "TRN",
    "soy_soybeans": "SOJ",
    "early_fava_beans": "FVL",
    "not_cultivated_fallow": "JAC",
    "longterm_meadows": "PPH",
    "temporary_meadows": "PTR",
    "vineyards_wine_vine_rebland_grapes": "VRC",
}
BANDS = ["B02", "B03", "B04", "B08"]


def main(path: str) -> None:
    d = np.load(path, allow_pickle=True)
    band_idx = [list(d["bands"]).index(b) for b in BANDS]
    dates = d["dates"].astype(str)
    steps = [i for i, s in enumerate(dates) if s.startswith("2023-")]  # 36 dekads of 2023
    x = d["X_NTC"][:, steps][:, :, band_idx].astype(np.float32)  # [N, T, 4]
    x[x == 65535] = np.nan
    # residual clouds and shadows: very bright blue, or very dark NIR
    bad = (x[..., 0] > 1800) | (x[..., 3] < 300)
    x[bad] = np.nan
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for code in sorted(set(LABEL_TO_CODE.values())):
        rows = np.isin(d["label_full"], [k for k, v in LABEL_TO_CODE.items() if v == code])
        xs = x[rows]
        med = np.nanmedian(xs, axis=0)  # [T, 4]
        q75, q25 = np.nanpercentile(xs, [75, 25], axis=0)
        spread = (q75 - q25) / 1.349
        # fill steps with no observation by linear interpolation, then smooth over 3 steps
        t = np.arange(len(steps))
        for arr in (med, spread):
            for b in range(4):
                ok = np.isfinite(arr[:, b])
                arr[:, b] = np.interp(t, t[ok], arr[ok, b])
        med = _smooth(med)
        spread = np.maximum(_smooth(spread), 60.0)
        out[code] = (med, spread)
        print(f"# {code}: {rows.sum()} points", file=sys.stderr)
    print("CURVES = {")
    for code, (med, spread) in out.items():
        print(f'    "{code}": (')
        for arr in (med, spread):
            print("        (" + ", ".join("(" + ", ".join(str(int(round(v))) for v in arr[:, b]) + ")" for b in range(4)) + "),")
        print("    ),")
    print("}")


def _smooth(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, ((1, 1), (0, 0)), mode="edge")
    return (p[:-2] + 2 * p[1:-1] + p[2:]) / 4


if __name__ == "__main__":
    main(sys.argv[1])
