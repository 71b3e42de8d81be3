"""Speed of every registered model, side by side: inference and training px/s, peak memory, FLOP per
pixel and achieved FLOP/s against this machine's matmul peak; then the fast paths one by one, the
allocator tuning, threads and chunk sizes, and dataset build and loader throughput.

    python benchmarks/bench_models.py                  # the full table (~10-15 min on 2 CPU cores)
    python benchmarks/bench_models.py --quick          # T = 48, 128 px only, no sweeps (~2 min)
    python benchmarks/bench_models.py --device cuda    # the same on a GPU: bf16 autocast, channels-last, pinned inputs
    make bench

Models run with random weights (speed does not depend on them) and the default ``ModelConfig``;
inference runs as ``cropmap predict`` runs it (BatchNorm folded, inference mode). Within each
(T, patch) configuration the models alternate call by call, so a change of machine load touches all of
them alike; each figure is the best of ``--rounds`` calls after one warm-up call (the least disturbed).
Peak RSS is that of the warm-up call, after the heap was handed back (see ``cropmap.runtime``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install too

from cropmap.config import ModelConfig
from cropmap.models import FITTED_MODELS, MODELS, build_model, kernels, temporal
from cropmap.models.fold import fold_batchnorm
from cropmap.runtime import ENV_SWITCH, trim_heap, tune_allocator

IN_CHANNELS, NUM_CLASSES = 4, 13
DEFAULT = ModelConfig().name


# ---------------------------------------------------------------------------------------------- measuring

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window: the heap handed back, then the kernel's high-water mark reset."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return
    trim_heap()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Best of a few square matrix products: this machine's dense FLOP/s ceiling, measured now."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(8):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_pixel(model: torch.nn.Module, t: int, size: int = 64) -> float:
    """Forward FLOPs per output pixel (convolutions and matrix products, as torch's counter sees them)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, doy = torch.randn(1, IN_CHANNELS, t, size, size), day_of_year(1, t, torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.cpu().eval()(x, doy)
    return counter.get_total_flops() / size**2


def day_of_year(b: int, t: int, device: torch.device) -> torch.Tensor:
    return torch.linspace(5, 360, t, device=device).expand(b, t).contiguous()


# ---------------------------------------------------------------------------------------------- models

@dataclass
class Runner:
    """One model in one (T, patch) configuration: inference and training calls, with their inputs."""
    name: str
    infer_model: torch.nn.Module
    train_model: torch.nn.Module
    device: torch.device
    batch: int
    t: int
    size: int
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        pin = self.device.type == "cuda"
        x = torch.randn(self.batch, IN_CHANNELS, self.t, self.size, self.size, generator=g)
        y = torch.randint(0, NUM_CLASSES, (self.batch, self.size, self.size), generator=g)
        # pinned host memory, copied without blocking: how a GPU loader feeds the device
        self.x_host, self.y_host = (x.pin_memory(), y.pin_memory()) if pin else (x, y)
        self.doy = day_of_year(self.batch, self.t, self.device)
        self.optimizer = torch.optim.AdamW(self.train_model.parameters(), lr=1e-4)

    @property
    def pixels(self) -> int:
        return self.batch * self.size**2

    def autocast(self):
        # bf16 autocast on GPU only: on CPUs without AVX512-BF16/AMX it is slower (see benchmarks/README.md)
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()

    def infer(self) -> None:
        with torch.inference_mode(), self.autocast():
            x = self.x_host.to(self.device, non_blocking=True)
            self.infer_model(x, self.doy).argmax(1)
        sync(self.device)

    def train_step(self) -> None:
        x = self.x_host.to(self.device, non_blocking=True)
        y = self.y_host.to(self.device, non_blocking=True)
        with self.autocast():
            loss = F.cross_entropy(self.train_model(x, self.doy), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        sync(self.device)


def make_models(name: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(inference model as predict builds it, training model) with the same random weights."""
    torch.manual_seed(0)
    cfg = ModelConfig(name=name)
    model = build_model(name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, **cfg.kwargs())
    infer = fold_batchnorm(model).to(device)
    train = model.to(device).train()
    if device.type == "cuda":  # NHWC convolutions run on the tensor cores without transposes
        infer, train = infer.to(memory_format=torch.channels_last), train.to(memory_format=torch.channels_last)
    return infer, train


@dataclass
class Figure:
    px_s: float = 0.0
    peak_mb: float = 0.0
    faults_per_call: float = 0.0
    error: str = ""


def measure_alternating(runners: dict[str, Runner], what: str, rounds: int, device: torch.device) -> dict[str, Figure]:
    """Warm-up call per model (its peak memory recorded), then ``rounds`` timed calls with the models alternating."""
    figs = {n: Figure() for n in runners}
    calls = {n: (r.infer if what == "infer" else r.train_step) for n, r in runners.items()}
    best = {n: float("inf") for n in runners}
    faults = {n: 0 for n in runners}
    for n, call in calls.items():
        reset_peak(device)
        try:
            call()
        except (RuntimeError, MemoryError) as e:  # out of memory at this size: reported, not fatal
            figs[n].error = "out of memory" if "memory" in str(e).lower() else type(e).__name__
            calls[n] = None
        figs[n].peak_mb = peak_mb(device)
    for _ in range(rounds):
        for n, call in calls.items():
            if call is None:
                continue
            f0, t0 = minor_faults(), time.perf_counter()
            call()
            best[n] = min(best[n], time.perf_counter() - t0)
            # the last round's: in the first, the heap regrows after the other models' warm-ups trimmed it
            faults[n] = minor_faults() - f0
    for n, r in runners.items():
        if calls[n] is not None:
            figs[n].px_s = r.pixels / best[n]
            figs[n].faults_per_call = faults[n]
    return figs


def model_table(names: list[str], steps: list[int], sizes: list[int], device: torch.device, rounds: int,
                px_per_call: int, train_sizes: list[int], peak: float, out: list[dict]) -> None:
    models = {n: make_models(n, device) for n in names}
    fpp = {(n, t): flops_per_pixel(make_models(n, torch.device("cpu"))[0], t) for n in names for t in steps}
    header = (f"{'model':<20} {'T':>3} {'patch':>5} {'batch':>5} {'MFLOP/px':>8} {'infer px/s':>10} {'% peak':>6} "
              f"{'RSS MB':>7} {'faults':>7} {'train px/s':>10} {'RSS MB':>7}")
    print(header)
    print("-" * len(header))
    for t in steps:
        for size in sizes:
            batch = max(1, px_per_call // size**2)
            runners = {n: Runner(n, *models[n], device, batch, t, size) for n in names}
            inf = measure_alternating(runners, "infer", rounds, device)
            train = size in train_sizes
            trn = measure_alternating(runners, "train", rounds, device) if train else {n: Figure() for n in names}
            for n in names:
                mf = fpp[(n, t)] / 1e6
                i, tr = inf[n], trn[n]
                pct = 100 * fpp[(n, t)] * i.px_s / peak if i.px_s else 0
                row = dict(model=n, T=t, patch=size, batch=batch, mflop_px=mf, infer_px_s=i.px_s, pct_peak=pct,
                           infer_rss_mb=i.peak_mb, faults_per_call=i.faults_per_call, train_px_s=tr.px_s,
                           train_rss_mb=tr.peak_mb, errors=(i.error, tr.error))
                out.append(row)
                show = lambda f: f"{f.px_s:>10,.0f}" if not f.error else f"{f.error:>10}"
                print(f"{n:<20} {t:>3} {size:>5} {batch:>5} {mf:>8.2f} {show(i)} {pct:>5.0f}% {i.peak_mb:>7,.0f} "
                      f"{i.faults_per_call:>7,.0f} {show(tr) if train else '-':>10} {tr.peak_mb:>7,.0f}", flush=True)
            del runners


# ---------------------------------------------------------------------------------------------- fast paths

def fast_paths(device: torch.device, t: int, size: int, rounds: int, compile_too: bool) -> None:
    """The default model's inference by each formulation, same weights: what each fast path buys."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    base = build_model(cfg.name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, **cfg.kwargs()).eval().to(device)
    folded = fold_batchnorm(base)
    x = torch.randn(1, IN_CHANNELS, t, size, size, device=device)
    doy = day_of_year(1, t, device)

    def run(model, reference=False, autocast=None, fuse=True):
        def call():
            ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            kernels.FUSE = fuse
            try:
                with torch.inference_mode(), ctx:
                    out = model(x, doy, reference=reference) if reference else model(x, doy)
            finally:
                kernels.FUSE = True
            sync(device)
            return out
        return call

    cases: dict[str, Callable] = {
        "reference: [B·H·W, C, T] Conv1d": run(base, reference=True),
        "grid (k, 1) convolution, channels-last": run(base),
        "grid + BatchNorm folded": run(folded, fuse=False),
        "grid + folded + conv+ReLU fused (predict)": run(folded),
    }
    if bf16_native(device):
        cases["grid + folded + bf16 autocast"] = run(folded, autocast=True)
    else:  # emulated bf16 convolutions: many times slower than fp32, so not worth a benchmark's minutes
        print("bf16 autocast skipped: this CPU has no native bf16 (AVX512-BF16 or AMX)")
    if compile_too:
        compiled = torch.compile(folded, dynamic=False)
        t0 = time.perf_counter()
        run(compiled)()
        print(f"torch.compile: first call {time.perf_counter() - t0:.0f} s")
        cases["grid + folded + torch.compile"] = run(compiled)
    with torch.inference_mode():
        ref = base(x, doy).argmax(1)
    best = {k: float("inf") for k in cases}
    for k, c in cases.items():
        out = c()  # warm-up
        agree = (out.argmax(1) == ref).float().mean().item()
        best[k] = min(best[k], _timed(c))
        cases[k] = (c, agree)
    for _ in range(rounds - 1):
        for k, (c, _) in cases.items():
            best[k] = min(best[k], _timed(c))
    print(f"{'formulation':<44} {'px/s':>10} {'argmax = fp32 reference':>24}")
    for k, (_, agree) in cases.items():
        print(f"{k:<44} {size * size / best[k]:>10,.0f} {100 * agree:>23.2f}%")


def bf16_native(device: torch.device) -> bool:
    return device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _timed(call: Callable) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def sweep_threads_and_chunks(t: int, size: int, rounds: int) -> None:
    """Inference px/s of the default model over torch threads and temporal-CNN chunk sizes."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = fold_batchnorm(build_model(cfg.name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, **cfg.kwargs()))
    x, doy = torch.randn(1, IN_CHANNELS, t, size, size), day_of_year(1, t, torch.device("cpu"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # taskset-aware
    chunk0, threads0 = temporal.INFERENCE_CHUNK_PIXELS, torch.get_num_threads()
    threads = sorted({1, max(1, cores // 2), cores})
    chunks = [1 << 12, 1 << 14, 1 << 16]
    grid = {(th, ch): float("inf") for th in threads for ch in chunks}
    try:
        for r in range(rounds + 1):  # round 0 warms every configuration up
            for (th, ch) in grid:
                torch.set_num_threads(th)
                temporal.INFERENCE_CHUNK_PIXELS = ch
                with torch.inference_mode():
                    dt = _timed(lambda: model(x, doy))
                if r:
                    grid[(th, ch)] = min(grid[(th, ch)], dt)
    finally:
        temporal.INFERENCE_CHUNK_PIXELS = chunk0
        torch.set_num_threads(threads0)
    print(f"{'threads':>7} " + " ".join(f"{'chunk ' + str(c):>12}" for c in chunks) + "   (px/s)")
    for th in threads:
        print(f"{th:>7} " + " ".join(f"{size * size / grid[(th, c)]:>12,.0f}" for c in chunks))
    print(f"(current INFERENCE_CHUNK_PIXELS = {chunk0}, torch threads = {threads0})")


# ---------------------------------------------------------------------------------------------- allocator

def allocator_probe() -> None:
    """Child process: default model inference at T = 48, 128 px; prints px/s and page faults per call."""
    applied = tune_allocator()
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = fold_batchnorm(build_model(cfg.name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, **cfg.kwargs()))
    x, doy = torch.randn(1, IN_CHANNELS, 48, 128, 128), day_of_year(1, 48, torch.device("cpu"))
    with torch.inference_mode():
        model(x, doy)
        f0, best = minor_faults(), float("inf")
        for _ in range(3):
            best = min(best, _timed(lambda: model(x, doy)))
    print(json.dumps(dict(applied=applied, px_s=128 * 128 / best, faults=(minor_faults() - f0) / 3)))


def allocator_section() -> None:
    rows = []
    for switch in ("0", "1", "0", "1"):  # alternating, each in a fresh process
        env = {**os.environ, ENV_SWITCH: switch}
        out = subprocess.run([sys.executable, __file__, "--allocator-probe"], env=env, capture_output=True,
                             text=True, check=True)
        rows.append((switch, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"{'malloc tuning':<14} {'px/s':>10} {'page faults / call':>19}")
    for switch, r in rows:
        print(f"{'on' if r['applied'] else 'off':<14} {r['px_s']:>10,.0f} {r['faults']:>19,.0f}")


# ---------------------------------------------------------------------------------------------- data

def data_section(size: int, steps: int) -> None:
    """Build a demo-scene dataset (pixel·dates/s), then train the default model on it with the default
    loader settings, timing how long each step waits for its batch."""
    from torch.utils.data import DataLoader

    from cropmap.config import BuildConfig, TrainConfig
    from cropmap.data.patches import PatchDataset
    from cropmap.dataset.build import build_dataset
    from cropmap.demo.scene import generate_scene
    from cropmap.nomenclature import IGNORE_INDEX

    with tempfile.TemporaryDirectory(prefix="cropmap-bench-") as tmp:
        scene = generate_scene(Path(tmp) / "scene", seed=0, size=size)
        t0 = time.perf_counter()
        s = build_dataset(scene.imagery, scene.parcels, Path(tmp) / "ds.zarr", BuildConfig())
        build_s = time.perf_counter() - t0
        dates = len(scene.dates)
        print(f"dataset build: {size} x {size} px x {dates} dates in {build_s:.1f} s = "
              f"{size * size * dates / build_s:,.0f} pixel·dates/s ({sum(s.n_patches.values())} patches, {s.steps} steps)")
        cfg = TrainConfig()
        ds = PatchDataset(s.path, "train", augment=cfg.augment, crop=cfg.crop or None)
        dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)
        torch.manual_seed(0)
        model = build_model(cfg.model.name, in_channels=IN_CHANNELS, num_classes=ds.info.class_table.num_classes,
                            **cfg.model.kwargs()).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        wait = total = 0.0
        done = 0
        while done < steps:
            it = iter(dl)
            while done < steps:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                loss = F.cross_entropy(model(batch["x"], batch["doy"], batch["mask"]), batch["y"],
                                       ignore_index=IGNORE_INDEX)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if done:  # the first step builds the optimiser state
                    wait += t1 - t0
                    total += time.perf_counter() - t0
                done += 1
        print(f"training loader: batch {cfg.batch_size}, {cfg.num_workers} workers: waits {1000 * wait / (done - 1):.1f} ms "
              f"of a {1000 * total / (done - 1):.0f} ms step = {100 * wait / total:.1f} % of step time")


# ---------------------------------------------------------------------------------------------- main

def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="registered names (default: all)")
    p.add_argument("--steps", type=int, nargs="+", default=[24, 48, 72], help="time steps T")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="patch sides in pixels")
    p.add_argument("--rounds", type=int, default=2, help="timed calls per model and configuration (best kept)")
    p.add_argument("--px-per-call", type=int, default=None,
                   help="pixels per call; batch = this / patch² (default 16384 on CPU, 2^18 on GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="T = 48, 128 px, no sweeps or data section")
    p.add_argument("--train-sizes", type=int, nargs="*", default=[128],
                   help="patch sides at which training is timed too (default 128: its px/s hardly depends on the "
                        "patch, and the full grid would double the run); none: inference only")
    p.add_argument("--no-data", action="store_true", help="skip the dataset build and loader section")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (first call 20-45 s on 2 cores)")
    p.add_argument("--json", type=Path, help="also write the model table here")
    p.add_argument("--allocator-probe", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.allocator_probe:
        return allocator_probe()

    device = torch.device(a.device)
    tuned = tune_allocator()
    if a.quick:
        a.steps, a.sizes = [48], [128]
    names = a.models or sorted(set(MODELS) - set(FITTED_MODELS), key=lambda n: (n != DEFAULT, n))  # networks
    px_per_call = a.px_per_call or (1 << 18 if device.type == "cuda" else 1 << 14)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    print(f"machine: {machine(device)}; malloc tuning {'on' if tuned else 'off'}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    peak = matmul_peak(device)
    print(f"fp32 matmul peak: {peak / 1e9:,.0f} GFLOP/s (measured now)")
    if device.type == "cuda":  # inference runs under bf16 autocast there, so that is its ceiling
        peak = matmul_peak(device, torch.bfloat16)
        print(f"bf16 matmul peak: {peak / 1e12:,.0f} TFLOP/s")

    print(f"\n## Models (best of {a.rounds} calls; % peak = achieved FLOP/s / {'bf16' if device.type == 'cuda' else 'fp32'} "
          f"matmul peak; faults = minor page faults per inference call)")
    rows: list[dict] = []
    model_table(names, a.steps, a.sizes, device, a.rounds, px_per_call, a.train_sizes, peak, rows)
    summarize(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))

    t_mid, s_mid = (48 if 48 in a.steps else a.steps[0]), (128 if 128 in a.sizes else a.sizes[0])
    print(f"\n## Fast paths, {DEFAULT}, T = {t_mid}, {s_mid} px, batch 1")
    fast_paths(device, t_mid, s_mid, a.rounds + 1, a.compile)
    if device.type == "cpu":
        print("\n## Allocator (fresh process each, alternating)")
        allocator_section()
        if not a.quick:
            print(f"\n## Threads x temporal-CNN chunk ({DEFAULT}, T = {t_mid}, 256 px)")
            sweep_threads_and_chunks(t_mid, 256, a.rounds)
    if not (a.quick or a.no_data):
        print("\n## Data")
        data_section(256, 30)
    print(f"\nbenchmark took {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


def summarize(rows: list[dict]) -> None:
    """The issue's ratios at T = 48, 128 px (where measured): default vs U-TAE, fast vs default."""
    at = {r["model"]: r for r in rows if r["T"] == 48 and r["patch"] == 128}
    if DEFAULT not in at:
        return
    d = at[DEFAULT]
    print(f"T = 48, 128 px: {DEFAULT} inference at {d['pct_peak']:.0f} % of its FLOP limit "
          f"({d['mflop_px']:.2f} MFLOP/px at the matmul peak measured above)")
    for other in ("utae", "tempcnn-unet-fast"):
        if other in at and at[other]["infer_px_s"]:
            o = at[other]
            train = f", training {d['train_px_s'] / o['train_px_s']:.2f}x" if o["train_px_s"] else ""
            print(f"T = 48, 128 px: {DEFAULT} / {other}: inference {d['infer_px_s'] / o['infer_px_s']:.2f}x{train}")


if __name__ == "__main__":
    main()
