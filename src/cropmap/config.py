"""Frozen configs for each command; fields equal the library parameters and the CLI option names.

The CLI's options are generated from these fields, their types and the comment on (or above) each field
(:mod:`cropmap.cli_options`): a field added here appears in ``--help``, ``--config`` files and
``--print-config`` with no other edit. ``Literal`` types are the allowed values; ``REQUIRED`` names the
fields a command cannot run without (given as an option or in the ``--config`` file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from .errors import CropmapError


@dataclass(frozen=True)
class BuildConfig:
    period_days: int = 10  # length of one composite step
    patch_size: int = 64  # patch side in pixels
    keep_scl: tuple[int, ...] = (4, 5, 6, 7)  # SCL classes kept as clear: vegetation, bare, water, unclassified
    # label scheme: group (RPG CODE_GROUP), crop (CODE_CULTU) or custom (the classes file; implied by classes)
    level: Literal["group", "crop", "custom"] = "group"
    min_pixels: int = 0  # level crop: codes with fewer labelled pixels than this form one class, "Autres cultures"
    classes: str | None = None  # your own classes: a CSV code,class[,color] (level custom); unlisted codes unlabelled
    background: bool = True  # add class 0 for land outside the parcels (roads, woods, water, towns); else unlabelled
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / val / test share of spatial blocks
    erode: int = 1  # parcel border width (pixels) set to the ignore label
    seed: int = 0  # seeds the block split


@dataclass(frozen=True)
class BuildRunConfig:
    """How ``cropmap build`` runs (the dataset does not depend on it, so it is not recorded in the dataset)."""

    # composite the area in blocks of this side in pixels, rounded to whole patches (memory grows with it)
    block_size: int = 1024
    workers: int = 1  # blocks composited at once on this machine (threads)
    # tcp://host:port of a Dask scheduler to composite the blocks on (its workers must see the imagery and the
    # output's folder)
    dask_address: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    # registered model name (cropmap.models.MODELS; rf: the random-forest baseline)
    name: str = "tempcnn-unet"
    hidden: int = 32  # temporal CNN channels
    kernel_size: int = 5  # temporal convolution kernel
    temporal_layers: int = 3  # temporal convolution layers
    embed_dim: int = 32  # D: per-pixel temporal embedding size
    unet_base: int = 32  # U-Net channels at full resolution (doubled at each level)
    unet_depth: int = 2  # number of down-samplings in the U-Net
    dropout: float = 0.1  # dropout probability in the model
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

    trees: int = 100  # model rf: trees in the forest
    # model rf: train pixels used at most: a class with more is subsampled to a common quota, smaller classes are kept
    # whole (so a département fits in memory and rare classes are not drowned); 0: every train pixel
    max_pixels: int = 100_000
    # model rf: fewest train pixels per leaf (1: fully grown trees, pure leaves, the smallest checkpoint per pixel used)
    min_samples_leaf: int = 1
    max_features: Literal["sqrt", "log2", "all"] = "sqrt"  # model rf: features tried per split


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
    # in-season training: the probability that a training patch is cut at a random date (the steps after it
    # masked, as `predict --until` masks them), so that one model serves every cut-off; 0: whole seasons
    cutoff: float = 0.0
    loss: Literal["ce", "focal"] = "ce"  # ce (cross-entropy) or focal (Lin et al. 2017: down-weights easy pixels)
    focal_gamma: float = 2.0  # focal loss exponent (0 gives cross-entropy)
    # loss weights from the train split's label counts: none, inverse, median (median frequency) or effective
    # (Cui et al. 2019)
    class_weights: Literal["none", "inverse", "median", "effective"] = "none"
    class_weights_beta: float = 0.9999  # beta of the effective number of samples, (1 - beta^n) / (1 - beta)
    patience: int = 0  # stop when val mIoU has not improved for this many validations (0: never stop early)
    # one head per level with a summed loss, e.g. [crop, group, coarse] (the dataset's level first); [] = flat
    levels: tuple[str, ...] = ()
    # where the coarser levels' heads sit: top (every head on the last layer) or intermediate (on earlier
    # temporal layers, the coarser the earlier, as in ms-convSTAR; tempcnn models only)
    level_heads: Literal["top", "intermediate"] = "top"
    # loss weight per level, finest first (ms-convSTAR: 1, 0.5, 0.1); () = 1 for every level
    level_weights: tuple[float, ...] = ()
    # out-of-fold answers for an audit: train this many models on parcel-disjoint spatial folds of the
    # dataset's patches (each validates on the next fold and never sees its own), into out/fold_<i>; 0: one model
    # on the dataset's train / val split
    folds: int = 0
    val_every: int = 1  # validate every this many epochs
    threads: int = 0  # torch CPU threads (0: torch's default)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"  # where to train (auto: a GPU if there is one)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16-mixed on GPU, 32 on CPU
    devices: int | str = 1  # devices per node (an int, or "auto" for all visible GPUs)
    num_nodes: int = 1  # machines taking part in distributed (DDP) training
    strategy: str = "auto"  # Lightning strategy: auto, ddp, ddp_find_unused_parameters_true, ...
    # deterministic algorithms: true, false, "warn" or "auto" (true on CPU; warn on GPU, where some ops, such as
    # bilinear upsampling's backward pass, have no deterministic kernel and true would stop training)
    deterministic: bool | str = "auto"
    # csv (logs/metrics.csv) or tensorboard (also logs/ for TensorBoard; needs tensorboardX)
    logger: Literal["csv", "tensorboard"] = "csv"


@dataclass(frozen=True)
class FetchParcelsConfig:
    """``cropmap fetch-parcels``: the RPG parcels of an area (any edition 2015-2025)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("year",)
    year: int | None = None  # RPG edition (2015-2025)
    # area to keep, XMIN YMIN XMAX YMAX in bbox_crs (or departement)
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str = "EPSG:2154"  # CRS of bbox (EPSG:2154 is Lambert-93)
    # metropolitan département (INSEE code, e.g. 29 or 2A): parcels clipped to its outline
    departement: str | None = None
    # departement: URL or vector file of départements with a code field (default: ADMIN EXPRESS COG from the WFS)
    boundaries: str | None = None
    # wfs: paged GetFeature (2015-2024); archive: the edition's 7z (regional for a département);
    # auto: wfs up to 40,000 km2 of area, else archive
    source: Literal["auto", "wfs", "archive"] = "auto"
    # URL or local path of an RPG 7z (or its first volume .7z.001); implies source archive
    archive: str | None = None
    wfs_url: str = "https://data.geopf.fr/wfs/ows"  # WFS 2.0 endpoint (or a mirror)
    # Atom feed listing the RPG archives (names and volumes are read there)
    feed_url: str | None = "https://data.geopf.fr/telechargement/resource/RPG"
    national: bool = False  # archive: the national archive even for a département
    cache: str | None = None  # download cache (default $CROPMAP_CACHE or ~/.cache/cropmap)
    sha256: str | None = None  # expected SHA-256 of a single-file archive (geopf publishes none)
    allow_http: bool = False  # accept plain http:// URLs


@dataclass(frozen=True)
class FetchImageryConfig:
    """``cropmap fetch-imagery``: Sentinel-2 L2A of an area as a Zarr cube (resumable)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("start", "end")
    # area to cover, XMIN YMIN XMAX YMAX in bbox_crs (or departement)
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str = "EPSG:4326"  # CRS of bbox (EPSG:4326 is lon/lat)
    departement: str | None = None  # metropolitan département (INSEE code): its box + 1 km, as fetch-parcels
    boundaries: str | None = None  # departement: URL or vector file of départements (as fetch-parcels)
    wfs_url: str | None = None  # departement: WFS 2.0 serving ADMIN EXPRESS (default the Géoplateforme's)
    start: str | None = None  # first acquisition date, YYYY-MM-DD
    end: str | None = None  # last acquisition date, YYYY-MM-DD (inclusive)
    # imagery provider: earth-search (sentinel-2-c1-l2a, no account), planetary-computer (sentinel-2-l2a,
    # signed URLs, optional key in $PC_SDK_SUBSCRIPTION_KEY) or earth-engine (S2_SR_HARMONIZED through xee,
    # needs an account and cropmap[gee])
    source: Literal["earth-search", "planetary-computer", "earth-engine"] = "earth-search"
    ee_project: str | None = None  # earth-engine: Google Cloud project registered for Earth Engine
    # earth-engine: clouds by Cloud Score+ (cs; no SCL in the cube) or keep SCL (scl)
    mask: Literal["cs", "scl"] = "cs"
    cs_threshold: float = 0.6  # earth-engine, mask cs: pixels with cs_cdf below this are nodata
    crs: str = "EPSG:2154"  # CRS of the 10 m grid: EPSG:n or utm
    max_cloud: float | None = 80.0  # skip items with more cloud cover, in percent
    stac_url: str | None = None  # STAC API to search instead of the source's own
    token_url: str | None = None  # planetary-computer: SAS token endpoint instead of the public one
    workers: int = 1  # blocks fetched at once on this machine (threads; memory grows with it)
    # side in pixels of the blocks read and written at once, a multiple of 512 (memory: ~60 B/px of a block
    # per worker, whatever the area)
    block: int = 2048
    # tcp://host:port of a Dask scheduler to fetch the blocks on (its workers write the output: a path they
    # must share)
    dask_address: str | None = None


@dataclass(frozen=True)
class EvaluateConfig:
    """``cropmap evaluate``: metrics of a run on a dataset split."""

    split: Literal["train", "val", "test"] = "test"  # the dataset split to score
    batch_size: int = 8  # patches per forward pass
    # in season: score with only the composite steps that end by this date (YYYY-MM-DD); later steps are masked
    until: str | None = None
    # also write timeliness.csv and timeliness.png: the scores at monthly cut-offs across the season
    timeliness: bool = False


@dataclass(frozen=True)
class PredictConfig:
    """``cropmap predict``: the crop map of one scene or of many tiles, and per-parcel answers."""

    # window side in pixels, the unit of work (memory grows with it); default: planned per model and scene, up to
    # 768 px, to compute the fewest pixels (512 for models that see the whole window)
    window: int | None = None
    # pixels shared by neighbouring windows, blended; default: the least that keeps the mosaic equal to a one-shot
    # prediction, 2 x the model's receptive radius + 1 (64 for models that see the whole window)
    overlap: int | None = None
    confidence: bool = False  # also write <map>.confidence.tif (the highest class probability)
    probabilities: bool = False  # also write <map>.probabilities.tif (one band per class)
    # also write <map>.uncertainty.tif: normalised entropy and margin (top-1 minus top-2), in percent
    uncertainty: bool = False
    quicklook: bool = True  # also write <map>.quicklook.png
    # in season: use only the acquisitions up to this date (YYYY-MM-DD); the steps after it are masked, as for
    # imagery that ends there (a model trained with cutoff > 0 has seen such seasons)
    until: str | None = None
    # where the model runs: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda, cuda:N or mps;
    # compositing stays on the CPU
    device: str = "auto"
    workers: int = 1  # several imagery folders: tiles predicted at once on this machine
    # tcp://host:port of a Dask scheduler to run the tiles on (its workers must see the run, imagery and output)
    dask_address: str | None = None


@dataclass(frozen=True)
class AuditConfig:
    """``cropmap audit``: a traffic-light marker for every declared parcel (cropmap.monitoring.markers)."""

    level: str | None = None  # hierarchy level to compare (default: the model's own level)
    min_confidence: float = 0.0  # leave out of the list the disagreements predicted less confidently than this
    target_precision: float = 0.9  # expected share of wrong declarations among the red parcels (sets the thresholds)
    min_pixels: int = 20  # fewer clear pixels than this are too little evidence for red or green (orange)
    # also write <out>.inspect.csv: this many parcels whose field check teaches the model most (uncertainty
    # sampling, in turn over the declared classes so rare ones are not starved); 0: none
    inspect: int = 0


@dataclass(frozen=True)
class ReviewConfig:
    """``cropmap review``: the offline parcel review page."""

    color: Literal["marker", "class"] = "marker"  # parcels coloured by audit marker or by predicted class


@dataclass(frozen=True)
class AreasConfig:
    """``cropmap areas``: per-class mapped area and its stratified estimate (Olofsson et al. 2014)."""

    z: float = 1.959964  # normal quantile of the confidence interval (1.96: 95 %)


@dataclass(frozen=True)
class ExportConfig:
    """``cropmap export``: a trained model as a file other runtimes load."""

    format: Literal["onnx"] = "onnx"  # output format
    opset: int | None = None  # ONNX opset (default: the exporter's recommended one)


@dataclass(frozen=True)
class DemoConfig:
    """``cropmap demo``: the embedded scene through build, train, evaluate, predict and audit."""

    size: int = 512  # scene side in pixels
    seed: int = 0  # seeds the scene, the split and the training
    epochs: int | None = None  # training epochs per model (default: the demo's own schedule)


C = TypeVar("C")


def load_config(cls: type[C], path: Path | str | None = None, **overrides: Any) -> C:
    """Build ``cls`` from defaults, then a YAML file, then non-None ``overrides``; unknown keys are errors."""
    return config_from(cls, read_config_file(path) if path is not None else {}, overrides, str(path or "options"))


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing, unreadable or non-mapping file is a one-line error."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise CropmapError(f"{p}: config file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CropmapError(f"{p}: cannot read the config file ({e})") from None
    except yaml.YAMLError as e:
        raise CropmapError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise CropmapError(f"{p}: expected a mapping of option: value")
    return loaded


def config_from(cls: type[C], values: dict[str, Any], overrides: dict[str, Any], source: str) -> C:
    """``cls`` from ``values`` (a config file's mapping), then the non-None ``overrides`` (nested dicts merged)."""
    values = dict(values)
    for k, v in overrides.items():
        if v is None or (isinstance(v, dict) and not any(x is not None for x in v.values())):
            continue
        if isinstance(v, dict) and isinstance(values.get(k), dict):
            values[k] = {**values[k], **{a: b for a, b in v.items() if b is not None}}
        elif isinstance(v, dict):
            values[k] = {a: b for a, b in v.items() if b is not None}
        else:
            values[k] = v
    return _from_dict(cls, values, source)


def _from_dict(cls: type[C], values: dict[str, Any], source: str) -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CropmapError(f"{source}: unknown option(s) {', '.join(unknown)} for {cls.__name__}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                value = _from_dict(type(default), {**dataclasses.asdict(default), **value}, source)
            elif not dataclasses.is_dataclass(value):
                raise CropmapError(f"{source}: option {name} must be a mapping")
        elif isinstance(value, list):
            value = tuple(value)
        allowed = literal_values(hints[name])
        if allowed and value not in allowed and str(value) in allowed:  # YAML reads precision: 32 as a number
            value = str(value)
        if allowed and value not in allowed and not (value is None and default is None):
            raise CropmapError(f"{source}: {name} {value!r} is not one of {', '.join(map(str, allowed))}")
        kwargs[name] = value
    return cls(**kwargs)


def literal_values(hint: Any) -> tuple:
    """The allowed values of a ``Literal[...]`` type (or ``Literal[...] | None``); () for any other type."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    return next((get_args(a) for a in get_args(hint) if get_origin(a) is Literal), ())


def missing_required(config: Any) -> list[str]:
    """The fields in the config class's ``REQUIRED`` that are still None."""
    return [n for n in getattr(type(config), "REQUIRED", ()) if getattr(config, n) is None]


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
