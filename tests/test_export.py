"""ONNX export of every registered model: onnxruntime reproduces PyTorch on new shapes, metadata is complete."""

import json
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

from cropmap.checkpoint import load_checkpoint
from cropmap.cli import main
from cropmap.data.patches import normalise
from cropmap.errors import CropmapError
from cropmap.export import export_onnx
from cropmap.models import FITTED_MODELS, MODELS
from cropmap.models.temporal import INFERENCE_CHUNK_PIXELS


# per-model hyper-parameters beyond the shared fields, kept small (the graph exported is the same)
SMALL_OPTIONS = {"utae": {"encoder_widths": [8, 8, 8, 16], "decoder_widths": [8, 8, 8, 16], "n_head": 2, "d_model": 16}}


@pytest.fixture(scope="module")
def runs(tiny_run, tiny_dataset, tmp_path_factory):
    """A trained run per registered model: ``tiny_run`` for the seed model, a few steps for the others."""
    from cropmap.config import ModelConfig, TrainConfig
    from cropmap.training import train_model

    out = {load_checkpoint(tiny_run).model_name: tiny_run}
    for name in sorted(set(MODELS) - set(out) - set(FITTED_MODELS)):  # the forest refuses export (test_forest)
        run = tmp_path_factory.mktemp("export-runs") / name
        model = ModelConfig(name=name, hidden=8, embed_dim=8, temporal_layers=2, options=SMALL_OPTIONS.get(name, {}))
        train_model(tiny_dataset, run, TrainConfig(model=model, epochs=1, max_steps=2, batch_size=2))
        out[name] = run
    return out


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n == "utae" else n
                                        for n in sorted(set(MODELS) - set(FITTED_MODELS))])
def exported(request, runs, tmp_path_factory):
    run = runs[request.param]
    summary = export_onnx(run, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return run, summary


def _run_both(path, run, x, doy):
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "doy": doy})
    with torch.no_grad():
        want = load_checkpoint(run).build()(torch.from_numpy(x), torch.from_numpy(doy)).numpy()
    return got, want


def test_onnxruntime_matches_pytorch_on_other_shapes(exported):
    run, s = exported
    ck = load_checkpoint(run)
    assert s.inputs == {"x": ("batch", 4, "time", "height", "width"), "doy": ("batch", "time")}
    assert s.outputs == {"logits": ("batch", ck.class_table.num_classes, "height", "width")}
    assert 0 <= s.max_abs_diff <= 1e-3 and len({x[2:] for x in s.checked_shapes}) == 2
    rng = np.random.default_rng(7)
    # shapes the export never saw: odd H, W; T shorter than the grid; B * H * W above the size at which
    # PyTorch switches to row bands under no_grad (the graph must not have frozen either path's loop)
    big = int(np.ceil(np.sqrt(INFERENCE_CHUNK_PIXELS))) + 3
    for b, t, h, w in [(2, 9, 5, 3), (1, 3, big, big)]:
        x = rng.standard_normal((b, 4, t, h, w), dtype=np.float32)
        doy = np.broadcast_to(np.linspace(20, 340, t, dtype=np.float32), (b, t)).copy()
        got, want = _run_both(s.path, run, x, doy)
        assert got.shape == want.shape == (b, ck.class_table.num_classes, h, w)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        assert np.abs(want).max() > 1e-3  # a real comparison, not of zeros


def test_metadata_is_all_a_deployer_needs(exported):
    run, s = exported
    ck = load_checkpoint(run)
    meta = {p.key: p.value for p in onnx.load(s.path).metadata_props}
    assert meta == s.metadata
    assert meta["model"] == ck.model_name == s.model
    assert json.loads(meta["class_names"]) == list(ck.class_table.names)
    assert json.loads(meta["class_codes"]) == [list(c) for c in ck.class_table.codes]
    assert json.loads(meta["class_colors"]) == [list(c) for c in ck.class_table.colors]
    assert meta["class_level"] == ck.class_table.level
    assert json.loads(meta["bands"]) == list(ck.bands) == ["B2", "B3", "B4", "B8"]
    assert json.loads(meta["time_grid"]) == ck.time_grid.to_dict()
    assert json.loads(meta["day_of_year"]) == ck.time_grid.day_of_year.tolist()
    # the normalisation the metadata states gives the tensor cropmap itself feeds the model
    dn = np.random.default_rng(0).integers(1, 6000, (4, 3, 2, 2)).astype(np.uint16)
    mean, std = np.array(json.loads(meta["norm_mean"])), np.array(json.loads(meta["norm_std"]))
    by_metadata = (dn / 10000 - mean[:, None, None, None]) / std[:, None, None, None]
    np.testing.assert_allclose(by_metadata, normalise(dn, ck.norm_mean, ck.norm_std), rtol=1e-5)


def test_existing_output_is_kept_without_overwrite(exported, capsys):
    run, s = exported
    before = s.path.read_bytes()
    with pytest.raises(CropmapError, match="already exists \\(pass --overwrite"):
        export_onnx(run, s.path)
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(s.path)]) == 2
    assert capsys.readouterr().err.strip() == f"cropmap: error: {s.path}: already exists (pass --overwrite to replace it)"
    assert s.path.read_bytes() == before


def test_cli_calls_export_and_prints_a_summary(exported, tmp_path, capsys, monkeypatch):
    import cropmap.export

    run, s = exported
    calls = []
    monkeypatch.setattr(cropmap.export, "export_onnx", lambda *a, **k: calls.append((a, k)) or s)
    out = tmp_path / "m.onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out), "--opset", "20"]) == 0
    assert calls == [((run, out), {"opset": 20, "overwrite": False})]
    assert capsys.readouterr().out == (f"{s.model} -> {s.path} (ONNX opset {s.opset}, x [batch, 4, time, height, "
                                       f"width]); onnxruntime matches PyTorch within {s.max_abs_diff:.1e} on 2 "
                                       "input shapes\n")
    with pytest.raises(SystemExit):
        main(["export", "--run", str(run), "--format", "tflite", "--out", str(out)])


def test_single_file_output(exported):
    _, s = exported
    assert sorted(p.name for p in s.path.parent.iterdir()) == ["model.onnx"]  # no external weights, no temporary


def test_graph_that_does_not_match_the_weights_is_refused(exported, tmp_path, monkeypatch):
    """The onnxruntime check compares against PyTorch for real: a graph with one bias shifted is not written."""
    import cropmap.export

    run, s = exported
    proto = onnx.load(s.path)
    (bias,) = [i for i in proto.graph.initializer if i.name.startswith("model.head") and i.name.endswith("bias")]
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32(0.01), bias.name))
    monkeypatch.setattr(cropmap.export, "_to_onnx", lambda *args: proto)
    out = tmp_path / "m.onnx"
    with pytest.raises(CropmapError, match=r"m.onnx: the exported model's logits differ from PyTorch's by 1\.00e-02 "):
        export_onnx(run, out)
    assert list(tmp_path.iterdir()) == []


def test_exporter_failure_is_one_line_and_leaves_nothing(runs, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("unsupported operator\n(pages of detail)")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(CropmapError, match=r"ONNX export of tempcnn-pixel failed \(RuntimeError: unsupported operator\)$"):
        export_onnx(runs["tempcnn-pixel"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_says_what_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(CropmapError, match=r"needs onnx, onnxscript and onnxruntime .* pip install 'cropmap\[onnx\]'"):
        export_onnx(runs["tempcnn-pixel"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
