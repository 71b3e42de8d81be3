"""``cropmap export``: a trained run -> one self-describing ONNX file, checked against PyTorch with onnxruntime.

The file's ``metadata_props`` hold everything a deployer needs besides the weights: bands and their
normalisation, the time grid, class names, codes and colours, so no cropmap checkpoint travels with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import atomic_path, refuse_existing
from .checkpoint import Checkpoint, load_checkpoint
from .errors import CropmapError
from .models.protocol import model_traits

if TYPE_CHECKING:
    from onnx import ModelProto

TOLERANCE = 1e-3  # max |ONNX logit - PyTorch logit| accepted; float32 kernels differ by ~1e-6
DYNAMIC_AXES = {"x": {0: "batch", 2: "time", 3: "height", 4: "width"}, "doy": {0: "batch", 1: "time"}}
# sample H, W used for tracing: not multiples of any U-Net's 2^depth, so the padding branch is the one traced
TRACE_SHAPE = (2, 13, 11)  # B, H, W
INSTALL_HINT = "pip install 'cropmap[onnx]'"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    model: str
    opset: int
    inputs: dict[str, tuple[str | int, ...]]  # name -> shape, dynamic axes by name
    outputs: dict[str, tuple[str | int, ...]]
    metadata: dict[str, str]
    checked_shapes: tuple[tuple[int, ...], ...]  # x shapes run through onnxruntime and PyTorch
    max_abs_diff: float
    seconds: float


class _Logits(nn.Module):
    """``x [B, C, T, H, W]`` normalised reflectance, ``doy [B, T]`` -> logits ``[B, K, H, W]``.

    Fixes the exported signature to two tensors (no mask: every step is real, as in ``cropmap predict``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        return self.model(x, doy)


def export_onnx(run: Path | str, out: Path | str, *, opset: int | None = None, overwrite: bool = False,
                tolerance: float = TOLERANCE) -> ExportSummary:
    """Export the run's model to ``out`` with dynamic batch, time, height and width; the file is kept only
    if onnxruntime reproduces PyTorch's logits within ``tolerance`` on two input shapes."""
    start = time.perf_counter()
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)  # before the work; atomic_path checks again
    onnx, ort = _import_onnx()
    ckpt = load_checkpoint(run)
    model = ckpt.build()
    why = model_traits(model).no_export
    if why:
        raise CropmapError(f"{run}: {ckpt.model_name} has no ONNX export here ({why}); "
                           "predict with `cropmap predict --run`")
    proto = _to_onnx(model, ckpt, opset, run)
    metadata = _metadata(ckpt)
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (f"cropmap {ckpt.model_name}: x [batch, {len(ckpt.bands)}, time, height, width] normalised "
                        "reflectance and doy [batch, time] day of year -> logits [batch, K, height, width]; "
                        "metadata_props give the bands, normalisation, time grid and classes")
    with atomic_path(out, overwrite=overwrite) as tmp:
        onnx.save_model(proto, tmp)  # one file: these models are far below protobuf's 2 GB limit
        shapes, diff = _check_against_torch(tmp, out, model, ckpt, ort, tolerance)
    inputs, outputs = _signature(proto)
    return ExportSummary(out, ckpt.model_name, _opset_of(proto), inputs, outputs, metadata, shapes, diff,
                         time.perf_counter() - start)


def _to_onnx(model: nn.Module, ckpt: Checkpoint, opset: int | None, run: Path | str) -> ModelProto:
    """The model as an ONNX ``ModelProto`` with inputs ``x``, ``doy``, output ``logits`` and named dynamic axes."""
    c, t = len(ckpt.bands), ckpt.time_grid.steps
    b, h, w = TRACE_SHAPE
    x = torch.randn(b, c, t, h, w, generator=torch.Generator().manual_seed(0))
    doy = torch.as_tensor(ckpt.time_grid.day_of_year, dtype=torch.float32).expand(b, t).contiguous()
    dyn = torch.export.Dim.DYNAMIC
    # autograd stays on while tracing: embed_pixels then takes its one-shot path, not the row-band loop it
    # runs under no_grad to save memory, whose bounds would be frozen to the sample shape
    with _quiet_exporter(), torch.enable_grad():
        try:
            program = torch.onnx.export(
                _Logits(model).eval(), (x, doy), dynamo=True, opset_version=opset, input_names=["x", "doy"],
                output_names=["logits"], verbose=False,
                dynamic_shapes={k: {i: dyn for i in v} for k, v in DYNAMIC_AXES.items()})
        except Exception as e:  # torch.export / onnxscript failures run to pages; keep the first line
            raise CropmapError(f"{run}: ONNX export of {ckpt.model_name} failed ({_first_line(e)})") from e
    # torch.export calls the dynamic axes s0, s16...; give them the names deployers will read
    program.rename_axes({value.shape[axis]: name for value in program.model.graph.inputs
                         for axis, name in DYNAMIC_AXES[value.name].items()})
    proto = program.model_proto
    if opset is not None and _opset_of(proto) != opset:
        # the exporter keeps its own opset when the version converter fails, with only a log line
        raise CropmapError(f"--opset {opset}: the exporter could not convert {ckpt.model_name} to it "
                           f"(it produced opset {_opset_of(proto)}); choose opset {_opset_of(proto)} or newer")
    return proto


def _opset_of(proto: ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _import_onnx() -> tuple:
    try:
        import onnx
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (torch's ONNX exporter is built on it)
    except ImportError as e:
        raise CropmapError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name or e} is missing): "
                           f"{INSTALL_HINT}") from None
    return onnx, ort


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs optional-package notes (torchvision ops) and warns about torch internals; keep
    them for --debug only."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)  # failures surface as exceptions, which export_onnx reports
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _metadata(ckpt: Checkpoint) -> dict[str, str]:
    table, grid = ckpt.class_table, ckpt.time_grid
    return {
        "cropmap_version": __version__,
        "model": ckpt.model_name,
        "model_kwargs": json.dumps(ckpt.model_kwargs),
        "class_level": table.level,
        "class_names": json.dumps(list(table.names), ensure_ascii=False),
        "class_codes": json.dumps([list(c) for c in table.codes]),
        "class_colors": json.dumps([list(c) for c in table.colors]),
        "background_class": json.dumps(table.background),
        "bands": json.dumps(list(ckpt.bands)),
        "norm_mean": json.dumps([float(v) for v in ckpt.norm_mean]),
        "norm_std": json.dumps([float(v) for v in ckpt.norm_std]),
        "normalisation": "x[:, band] = (DN / 10000 - norm_mean[band]) / norm_std[band]; DN = L2A harmonized "
                         "surface reflectance digital numbers, composited per time step; never-observed pixels "
                         "are not meaningful (cropmap predict writes them as nodata 255)",
        "preprocessing": ckpt.record.to_json(),  # bands, cloud mask and SCL classes, grid, norm, source
        "time_grid": json.dumps(grid.to_dict()),
        "day_of_year": json.dumps([int(d) for d in grid.day_of_year]),
        "inputs": "x: float32 [batch, band, time, height, width]; doy: float32 [batch, time], day of year of each "
                  "step's centre (the day_of_year list for the model's own time grid)",
        "outputs": "logits: float32 [batch, class, height, width]; argmax over class = index into class_names",
    }


def _check_against_torch(path: Path, out: Path, model: nn.Module, ckpt: Checkpoint, ort, tolerance: float
                         ) -> tuple[tuple[tuple[int, ...], ...], float]:
    """Max |logit difference| between onnxruntime and PyTorch on two random inputs of other shapes than the
    traced one (one H, W a multiple of the U-Net's, one not; the model's T and another T)."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. an opset newer than this onnxruntime knows
        raise CropmapError(f"{out}: onnxruntime {ort.__version__} cannot load the exported model "
                           f"({_first_line(e)})") from e
    rng = np.random.default_rng(1)
    c, t = len(ckpt.bands), ckpt.time_grid.steps
    grid_doy = ckpt.time_grid.day_of_year.astype(np.float32)
    t2 = t + 4
    cases = [
        (rng.standard_normal((1, c, t, 32, 32), dtype=np.float32), grid_doy[None]),
        (rng.standard_normal((3, c, t2, 19, 7), dtype=np.float32),
         np.broadcast_to(np.sort(rng.uniform(1, 366, t2)).astype(np.float32), (3, t2)).copy()),
    ]
    diff = 0.0
    for x, doy in cases:
        (got,) = session.run(["logits"], {"x": x, "doy": doy})
        with torch.no_grad():
            want = model(torch.from_numpy(x), torch.from_numpy(doy)).numpy()
        if got.shape != want.shape:
            raise CropmapError(f"{out}: onnxruntime gave logits of shape {got.shape} for x {x.shape}, "
                               f"PyTorch {want.shape}")
        diff = max(diff, float(np.abs(got - want).max()))
    if not diff <= tolerance:  # also catches NaN
        raise CropmapError(f"{out}: the exported model's logits differ from PyTorch's by {diff:.2e} "
                           f"(tolerance {tolerance:.0e}); nothing written")
    return tuple(x.shape for x, _ in cases), diff


def _signature(proto: ModelProto) -> tuple[dict[str, tuple[str | int, ...]], dict[str, tuple[str | int, ...]]]:
    def shape(v) -> tuple[str | int, ...]:
        return tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)

    return ({v.name: shape(v) for v in proto.graph.input}, {v.name: shape(v) for v in proto.graph.output})
