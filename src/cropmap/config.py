"""Frozen configs for each stage; fields equal the library parameters and the CLI option names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import CropmapError


@dataclass(frozen=True)
class BuildConfig:
    period_days: int = 10  # length of one composite step
    patch_size: int = 64  # patch side in pixels
    keep_scl: tuple[int, ...] = (4, 5, 6, 7)  # SCL classes kept as clear: vegetation, bare, water, unclassified
    level: str = "group"  # label scheme: "group" (RPG CODE_GROUP), "crop" (CODE_CULTU) or "custom" (needs classes)
    min_pixels: int = 0  # crop level: codes with fewer labelled pixels than this form one class, "Autres cultures"
    classes: str | None = None  # CSV code,class[,color]: the user's own classes (level "custom"); others unlabelled
    background: bool = True  # add class 0 for land outside the parcels (roads, woods, water, towns)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / val / test share of spatial blocks
    erode: int = 1  # parcel border width (pixels) set to the ignore label
    seed: int = 0  # seeds the block split


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tempcnn-unet"  # a name in the model registry (cropmap.models.MODELS)
    hidden: int = 32  # temporal CNN channels
    kernel_size: int = 5  # temporal convolution kernel
    temporal_layers: int = 3
    embed_dim: int = 32  # D: per-pixel temporal embedding size
    unet_base: int = 32  # U-Net channels at full resolution (doubled at each level)
    unet_depth: int = 2  # number of down-samplings in the U-Net
    dropout: float = 0.1
    # keyword arguments of one model only (e.g. U-TAE's encoder widths), on top of the shared fields above
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The model's keyword arguments: the shared fields its constructor accepts, then ``options``."""
        from .models import accepted_kwargs

        d = dataclasses.asdict(self)
        name, options = d.pop("name"), d.pop("options")
        return {**accepted_kwargs(name, d), **options}


@dataclass(frozen=True)
class ForestConfig:
    """The random-forest baseline (``model.name: rf``), fitted by scikit-learn on per-pixel features."""

    trees: int = 100  # trees in the forest
    # train pixels used at most: a class with more is subsampled to a common quota, smaller classes are kept
    # whole (so a département fits in memory and rare classes are not drowned); 0: every train pixel
    max_pixels: int = 100_000
    min_samples_leaf: int = 1  # 1: fully grown trees (pure leaves, the smallest checkpoint per pixel used)
    max_features: str = "sqrt"  # features tried per split: "sqrt", "log2" or "all"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the network (a name in the model registry and its sizes)
    forest: ForestConfig = field(default_factory=ForestConfig)  # model rf only: the forest's size and sampling
    epochs: int = 12  # passes over the training patches; the learning rate follows a cosine over them
    # the schedule lasts at least this many optimiser steps: on a small area, where an epoch is a few steps,
    # the epochs are raised until it does (0: epochs alone)
    min_steps: int = 300
    batch_size: int = 8  # patches per optimiser step (per device)
    lr: float = 2e-3  # AdamW learning rate at the start of the cosine schedule
    weight_decay: float = 1e-4  # AdamW weight decay
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout: same seed, same run
    max_steps: int = -1  # stop after this many optimiser steps (-1: no limit); for smoke tests
    num_workers: int = 0  # DataLoader worker processes
    augment: bool = True  # random flips and 90-degree rotations
    crop: int = 0  # train on random crop x crop windows of each patch (0: whole patches)
    date_dropout: float = 0.0  # probability of masking each date of a training patch (at least one date is kept)
    temporal_crop: float = 1.0  # keep a random window of at least this fraction of the season (1: whole season)
    # spectral jitter: each training patch's reflectance is scaled per band by a random gain of this standard
    # deviation around 1 (atmosphere, sensor and soil brightness differ between areas and years); 0: off
    band_jitter: float = 0.0
    loss: str = "ce"  # "ce" (cross-entropy) or "focal" (Lin et al. 2017: down-weights easy pixels)
    focal_gamma: float = 2.0  # focal loss exponent (0 gives cross-entropy)
    class_weights: str = "none"  # "none", "inverse", "median" (median frequency) or "effective" (Cui et al. 2019)
    class_weights_beta: float = 0.9999  # beta of the effective number of samples, (1 - beta^n) / (1 - beta)
    patience: int = 0  # stop when val mIoU has not improved for this many validations (0: never stop early)
    # one head per level with a summed loss, e.g. [crop, group, coarse] (the dataset's level first); [] = flat
    levels: tuple[str, ...] = ()
    # where the coarser levels' heads sit: "top" (every head on the last layer) or "intermediate" (on earlier
    # temporal layers, the coarser the earlier, as in ms-convSTAR; tempcnn models only)
    level_heads: str = "top"
    # loss weight per level, finest first (ms-convSTAR: 1, 0.5, 0.1); () = 1 for every level
    level_weights: tuple[float, ...] = ()
    val_every: int = 1  # validate every this many epochs
    threads: int = 0  # torch CPU threads (0: torch's default)
    accelerator: str = "auto"  # "cpu", "gpu" or "auto"
    precision: str = "auto"  # "32", "bf16-mixed", "16-mixed" or "auto" (bf16-mixed on GPU, 32 on CPU)
    devices: int | str = 1  # devices per node (an int, or "auto" for all visible GPUs)
    num_nodes: int = 1  # machines taking part in distributed (DDP) training
    strategy: str = "auto"  # Lightning strategy: "auto", "ddp", "ddp_find_unused_parameters_true", ...
    # deterministic algorithms: true, false, "warn" or "auto" (true on CPU; warn on GPU, where some ops, such as
    # bilinear upsampling's backward pass, have no deterministic kernel and true would stop training)
    deterministic: bool | str = "auto"
    logger: str = "csv"  # "csv" (logs/metrics.csv) or "tensorboard" (also logs/ for TensorBoard; needs tensorboardX)


C = TypeVar("C")


def load_config(cls: type[C], path: Path | str | None = None, **overrides: Any) -> C:
    """Build ``cls`` from defaults, then a YAML file, then non-None ``overrides``; unknown keys are errors."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise CropmapError(f"{p}: config file does not exist") from None
        except yaml.YAMLError as e:
            raise CropmapError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise CropmapError(f"{p}: expected a mapping of option: value")
        values.update(loaded)
    for k, v in overrides.items():
        if v is None or (isinstance(v, dict) and not any(x is not None for x in v.values())):
            continue
        if isinstance(v, dict) and isinstance(values.get(k), dict):
            values[k] = {**values[k], **{a: b for a, b in v.items() if b is not None}}
        elif isinstance(v, dict):
            values[k] = {a: b for a, b in v.items() if b is not None}
        else:
            values[k] = v
    return _from_dict(cls, values, str(path or "options"))


def _from_dict(cls: type[C], values: dict[str, Any], source: str) -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CropmapError(f"{source}: unknown option(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                value = _from_dict(type(default), {**dataclasses.asdict(default), **value}, source)
            elif not dataclasses.is_dataclass(value):
                raise CropmapError(f"{source}: option {name} must be a mapping")
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
