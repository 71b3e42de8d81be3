"""predict's --device: names resolved or refused by name, the model and its inputs on the device, the probe on a
CPU copy, reading ahead while a GPU computes. No GPU here: the CUDA path runs through the same code with the CPU
as its device, and what only a GPU can show is said in benchmarks/README.md."""

import threading

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from cropmap.errors import CropmapError
from cropmap.prediction import predict_map
from cropmap.prediction.device import inference_device
from cropmap.prediction.windows import pipelined, receptive_radius

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")


def test_device_names():
    assert inference_device("cpu") == torch.device("cpu")
    assert inference_device(" CPU ") == torch.device("cpu")
    assert inference_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert inference_device(None) == inference_device("auto")
    with pytest.raises(CropmapError, match="--device gpu0: not a device name"):
        inference_device("gpu0")
    with pytest.raises(CropmapError, match="predicting on meta is not supported"):
        inference_device("meta")


@no_cuda
def test_cuda_refused_by_name_without_a_gpu(tiny_run, tiny_scene, tmp_path):
    with pytest.raises(CropmapError, match="--device cuda: torch sees no CUDA GPU"):
        inference_device("cuda")
    with pytest.raises(CropmapError, match="--device cuda:1: torch sees no CUDA GPU"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "map.tif", device="cuda:1", quicklook=False)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_explicit_cpu_gives_the_default_map(tiny_run, tiny_scene, tmp_path):
    a = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "a.tif", quicklook=False,
                    confidence_out=tmp_path / "ac.tif")
    b = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "b.tif", quicklook=False, device="cpu",
                    confidence_out=tmp_path / "bc.tif")
    if not torch.cuda.is_available():  # "auto" is the CPU here
        assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
        assert (tmp_path / "ac.tif").read_bytes() == (tmp_path / "bc.tif").read_bytes()
    assert a.windows_px == b.windows_px


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x, doy, mask=None):
        return self.c(x.mean(dim=2))


def test_radius_probe_runs_on_a_cpu_copy(monkeypatch):
    import copy

    copies = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda m: copies.append(m) or real(m))
    model = _Conv()
    assert receptive_radius(model, 4) == 1 and not copies  # on the CPU: probed as it is
    # parameters that say they are on another device: the probe copies the model to the CPU
    monkeypatch.setattr(torch.nn.Parameter, "device", property(lambda p: torch.device("meta")), raising=False)
    assert receptive_radius(model, 4) == 1 and copies == [model]


class _TwoStage:
    """A predictor in two stages that records the thread its inputs were read on."""

    def __init__(self, device):
        self.device, self.threads = torch.device(device), []

    def inputs(self, w):
        self.threads.append(threading.current_thread().name)
        return np.full((1,), w.col_off, np.float32), np.ones((1, 1), bool)

    def probabilities(self, x):
        return x

    def __call__(self, w):
        return self.probabilities(self.inputs(w)[0]), np.ones((1, 1), bool)


def test_reads_ahead_while_the_model_runs_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 10**6)  # every core busy: a CPU model reads in line
    windows = [Window(c, 0, 1, 1) for c in range(4)]
    cpu, gpu = _TwoStage("cpu"), _TwoStage("meta")  # "meta": any device that is not the CPU
    assert [int(p[0]) for p, _ in pipelined(cpu, windows)] == [0, 1, 2, 3]
    assert [int(p[0]) for p, _ in pipelined(gpu, windows)] == [0, 1, 2, 3]
    assert all(not t.startswith("cropmap-read") for t in cpu.threads)
    assert all(t.startswith("cropmap-read") for t in gpu.threads)
