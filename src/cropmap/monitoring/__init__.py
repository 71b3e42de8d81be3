"""Area monitoring (EU Regulation 2021/2116, Art. 70): answers per declared parcel that a paying agency can
act on — out-of-fold predictions (``folds``), calibrated probabilities (``calibration``), traffic-light
markers with thresholds chosen for a target precision (``markers``)."""
