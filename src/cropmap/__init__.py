"""cropmap: crop-type maps from Sentinel-2 time series, with the French parcel registry (RPG) as ground truth.

The Python API is the functions the command line calls, with the same config objects::

    import cropmap
    ds = cropmap.build("scene/imagery", "scene/parcels.gpkg", "dataset.zarr", cropmap.BuildConfig(patch_size=32))
    run = cropmap.train(ds.path, "runs/unet", cropmap.TrainConfig(epochs=20)).run
    metrics = cropmap.evaluate(run, ds.path, split="test")
    result = cropmap.predict(run, "scene/imagery", "map.tif", parcels="scene/parcels.gpkg",
                             parcels_out="parcels_pred.gpkg")
    flags = cropmap.audit(result.parcels_path, "audit.csv")

Names are loaded on first use, so ``import cropmap`` stays light (no torch until a function needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute): each is what one CLI command calls
API = {
    "build": ("cropmap.dataset.build", "build_dataset"),  # cropmap build
    "train": ("cropmap.training", "train_model"),  # cropmap train (any registered model, rf included)
    "evaluate": ("cropmap.evaluation", "evaluate_run"),  # cropmap evaluate
    "predict": ("cropmap.prediction", "predict_map"),  # cropmap predict (one scene)
    "predict_tiles": ("cropmap.prediction", "predict_tiles"),  # cropmap predict --tiles
    "audit": ("cropmap.auditing", "audit_parcels"),  # cropmap audit
    "compare_runs": ("cropmap.compare", "compare_runs"),  # cropmap compare
    "write_report": ("cropmap.report", "write_report"),  # cropmap report
    "export_onnx": ("cropmap.export", "export_onnx"),  # cropmap export
    "estimate_areas": ("cropmap.monitoring.areas", "estimate_areas"),  # cropmap areas
    "write_review": ("cropmap.monitoring.review", "write_review"),  # cropmap review
    "fetch_parcels": ("cropmap.sources.rpg", "fetch_parcels"),  # cropmap fetch-parcels
    "fetch_imagery": ("cropmap.sources.fetch", "fetch_imagery"),  # cropmap fetch-imagery
    "run_demo": ("cropmap.demo.run", "run_demo"),  # cropmap demo
    "demo_scene": ("cropmap.demo.scene", "generate_scene"),  # the demo's synthetic scene, in the real formats
    "load_checkpoint": ("cropmap.checkpoint", "load_checkpoint"),
    "open_dataset": ("cropmap.dataset.store", "open_dataset"),
    "BuildConfig": ("cropmap.config", "BuildConfig"),
    "TrainConfig": ("cropmap.config", "TrainConfig"),
    "ModelConfig": ("cropmap.config", "ModelConfig"),
    "ForestConfig": ("cropmap.config", "ForestConfig"),
    "BuildRunConfig": ("cropmap.config", "BuildRunConfig"),
    "PredictConfig": ("cropmap.config", "PredictConfig"),
    "EvaluateConfig": ("cropmap.config", "EvaluateConfig"),
    "AuditConfig": ("cropmap.config", "AuditConfig"),
    "ExportConfig": ("cropmap.config", "ExportConfig"),
    "FetchImageryConfig": ("cropmap.config", "FetchImageryConfig"),
    "FetchParcelsConfig": ("cropmap.config", "FetchParcelsConfig"),
    "DemoConfig": ("cropmap.config", "DemoConfig"),
    "load_config": ("cropmap.config", "load_config"),
    "CropmapError": ("cropmap.errors", "CropmapError"),
}

__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name not in API:
        raise AttributeError(f"module 'cropmap' has no attribute {name!r}")
    module, attr = API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
