"""The CLI's options are generated from the config dataclasses: every option of the hand-written parser
before the change is still there, and a field added to a config reaches --help, --config and --print-config."""

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

import cropmap.cli as cli
from cropmap.cli import main, parser
from cropmap.cli_options import add_config_options, overrides_from
from cropmap.config import (AuditConfig, BuildConfig, DemoConfig, EvaluateConfig, FetchImageryConfig, FetchParcelsConfig,
                            PredictConfig, TrainConfig, config_from, load_config)
from cropmap.errors import CropmapError

# every command's options as the hand-written parser had them (commit 7199406), to be kept
BEFORE = {
    "demo": ["--epochs", "--out", "--overwrite", "--seed", "--size"],
    "fetch-parcels": ["--allow-http", "--archive", "--bbox", "--bbox-crs", "--boundaries", "--cache", "--departement",
                      "--feed-url", "--national", "--out", "--overwrite", "--sha256", "--source", "--wfs-url", "--year"],
    "fetch-imagery": ["--bbox", "--bbox-crs", "--block", "--boundaries", "--crs", "--cs-threshold", "--dask-address",
                      "--departement", "--ee-project", "--end", "--mask", "--max-cloud", "--out", "--overwrite",
                      "--source", "--stac-url", "--start", "--token-url", "--wfs-url", "--workers"],
    "build": ["--block-size", "--classes", "--config", "--dask-address", "--erode", "--imagery", "--keep-scl", "--level",
              "--min-pixels", "--no-background", "--out", "--overwrite", "--parcels", "--patch-size", "--period",
              "--seed", "--workers"],
    "train": ["--accelerator", "--band-jitter", "--batch-size", "--class-weights", "--config", "--crop", "--data",
              "--date-dropout", "--devices", "--embed-dim", "--epochs", "--focal-gamma", "--hidden", "--level-heads",
              "--level-weights", "--levels", "--logger", "--loss", "--lr", "--max-pixels", "--max-steps", "--min-steps",
              "--model", "--num-nodes", "--num-workers", "--out", "--overwrite", "--patience", "--precision",
              "--print-config", "--resume", "--seed", "--strategy", "--temporal-crop", "--threads", "--trees",
              "--unet-base", "--unet-depth"],
    "evaluate": ["--data", "--out", "--run", "--split"],
    "compare": ["--out", "--overwrite"],
    "predict": ["--confidence", "--dask-address", "--imagery", "--no-quicklook", "--out", "--overlap", "--overwrite",
                "--parcels", "--parcels-out", "--probabilities", "--run", "--window", "--workers"],
    "audit": ["--level", "--min-confidence", "--out", "--overwrite", "--parcels"],
    "areas": ["--map", "--reference", "--out", "--overwrite"],  # added after the generation (issue 13)
    "review": ["--parcels", "--out", "--audit", "--data", "--overwrite"],  # added after it (issue 14)
    "export": ["--format", "--opset", "--out", "--overwrite", "--run"],
    "report": ["--map", "--out", "--overwrite", "--run"],
}
# renamed so that option = field; the old name stays as an alias (README, "Option renames")
RENAMED = {"--period": "--period-days"}


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(sp: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in sp._actions for o in a.option_strings}


def test_every_earlier_option_is_kept():
    subs = _subparsers(parser())
    assert sorted(subs) == sorted(BEFORE)
    for name, before in BEFORE.items():
        now = _options(subs[name])
        assert set(before) <= set(now), (name, sorted(set(before) - set(now)))
        for old, new in RENAMED.items():
            if old in before:
                assert now[old] is now[new]  # one option, two names


def test_option_names_are_field_names():
    subs = _subparsers(parser())
    for command, cls in [("train", TrainConfig), ("build", BuildConfig), ("predict", PredictConfig),
                         ("evaluate", EvaluateConfig), ("audit", AuditConfig), ("fetch-imagery", FetchImageryConfig),
                         ("fetch-parcels", FetchParcelsConfig), ("demo", DemoConfig)]:
        opts = _options(subs[command])
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING
                                            else f.default):
                assert f"--{f.name.replace('_', '-')}" in opts, (command, f.name)


@pytest.mark.parametrize("argv, want", [
    (["--period", "5", "--no-background", "--keep-scl", "4", "5", "--split-fractions", "0.5", "0.25", "0.25"],
     dict(period_days=5, background=False, keep_scl=(4, 5), split_fractions=(0.5, 0.25, 0.25))),
    (["--level", "crop", "--min-pixels", "30"], dict(level="crop", min_pixels=30)),
])
def test_build_options_reach_the_config(argv, want):
    a = parser().parse_args(["build", "--imagery", "i", "--parcels", "p", "--out", "o", *argv])
    cfg = config_from(BuildConfig, {}, overrides_from(a, BuildConfig), "options")
    assert {k: getattr(cfg, k) for k in want} == want


def test_train_options_nested_and_typed():
    a = parser().parse_args(["train", "--model", "tempcnn-pixel", "--hidden", "8", "--trees", "5", "--devices", "auto",
                             "--deterministic", "false", "--levels", "crop", "group", "--level-weights", "1", "0.5",
                             "--no-augment"])
    cfg = config_from(TrainConfig, {}, overrides_from(a, TrainConfig), "options")
    assert (cfg.model.name, cfg.model.hidden, cfg.forest.trees, cfg.devices, cfg.deterministic) == \
        ("tempcnn-pixel", 8, 5, "auto", False)
    assert (cfg.levels, cfg.level_weights, cfg.augment) == (("crop", "group"), (1.0, 0.5), False)
    a = parser().parse_args(["train", "--devices", "2"])
    assert config_from(TrainConfig, {}, overrides_from(a, TrainConfig), "options").devices == 2
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "--loss", "dice"])


def test_literal_values_are_checked_in_config_files(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("loss: dice\n")
    with pytest.raises(CropmapError, match="loss 'dice' is not one of ce, focal"):
        load_config(TrainConfig, p)
    p.write_text("precision: 32\n")  # YAML reads it as a number
    assert load_config(TrainConfig, p).precision == "32"


def test_required_fields_and_arguments_are_reported(tmp_path, capsys):
    assert main(["fetch-imagery", "--bbox", "0", "0", "1", "1", "--out", str(tmp_path / "c.zarr")]) == 2
    assert "fetch-imagery: --start and --end are required" in capsys.readouterr().err
    assert main(["predict", "--imagery", "x", "--out", "m.tif"]) == 2
    assert "predict: --run is required" in capsys.readouterr().err


def test_print_config_then_config_file_round_trip(tmp_path, capsys):
    assert main(["predict", "--print-config", "--window", "256", "--no-quicklook"]) == 0
    text = capsys.readouterr().out
    assert "window: 256  # window side in pixels" in text and "quicklook: false" in text
    (tmp_path / "p.yaml").write_text(text)
    a = parser().parse_args(["predict", "--config", str(tmp_path / "p.yaml"), "--overlap", "32"])
    cfg = config_from(PredictConfig, yaml.safe_load(text), overrides_from(a, PredictConfig), "p.yaml")
    assert (cfg.window, cfg.overlap, cfg.quicklook) == (256, 32, False)
    # build: one file holds both of its configs; a key neither knows is an error naming the file
    (tmp_path / "b.yaml").write_text("patch_size: 32\nworkers: 2\nbogus: 1\n")
    assert main(["build", "--config", str(tmp_path / "b.yaml"), "--print-config"]) == 2
    assert f"{tmp_path / 'b.yaml'}: unknown option(s) bogus" in capsys.readouterr().err
    (tmp_path / "b.yaml").write_text("patch_size: 32\nworkers: 2\n")
    assert main(["build", "--config", str(tmp_path / "b.yaml"), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "patch_size: 32" in out and "workers: 2" in out


@dataclass(frozen=True)
class _AuditWithAField(AuditConfig):
    # a field added to a config, to see it reach every door
    max_listed: int = 50  # list at most this many parcels
    order: Literal["confidence", "area"] = "confidence"  # how the list is ranked


def test_a_field_added_to_a_config_reaches_help_config_and_print_config(tmp_path, capsys, monkeypatch):
    original = cli.commands

    def patched():
        return [dataclasses.replace(c, configs=(_AuditWithAField,)) if c.name == "audit" else c for c in original()]

    monkeypatch.setattr(cli, "commands", patched)
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    helptext = capsys.readouterr().out
    assert "--max-listed" in helptext and "list at most this many parcels (default 50)" in helptext
    assert "{confidence,area}" in helptext
    assert main(["audit", "--print-config", "--max-listed", "7"]) == 0
    assert "max_listed: 7  # list at most this many parcels" in capsys.readouterr().out
    (tmp_path / "a.yaml").write_text("max_listed: 9\norder: area\n")
    seen = []
    monkeypatch.setattr(cli, "_audit", lambda a, cfg: seen.append(cfg))
    monkeypatch.setattr(cli, "commands", lambda: [dataclasses.replace(c, run=cli._audit) for c in patched()])
    assert main(["audit", "--parcels", "p.gpkg", "--out", "a.csv", "--config", str(tmp_path / "a.yaml")]) == 0
    assert (seen[0].max_listed, seen[0].order) == (9, "area")


def test_a_config_without_a_command_line_form_fails_loudly():
    @dataclass(frozen=True)
    class Odd:
        x: set = frozenset()  # no command-line form

    with pytest.raises(TypeError, match="no command-line form"):
        add_config_options(argparse.ArgumentParser(), Odd)


def test_config_fields_match_the_library_functions():
    """Each config's fields are keyword parameters of the function the CLI calls with them, with the same
    defaults, so the Python API and the CLI cannot drift apart."""
    import inspect

    from cropmap.auditing import audit_parcels
    from cropmap.demo.run import run_demo
    from cropmap.evaluation import evaluate_run
    from cropmap.prediction import predict_tiles
    from cropmap.sources.fetch import fetch_imagery
    from cropmap.sources.providers import PROVIDERS
    from cropmap.sources.rpg import fetch_parcels
    from cropmap.config import BuildRunConfig
    from cropmap.dataset.build import build_dataset

    for cls, fn in [(PredictConfig, predict_tiles), (EvaluateConfig, evaluate_run), (AuditConfig, audit_parcels),
                    (FetchImageryConfig, fetch_imagery), (FetchParcelsConfig, fetch_parcels), (DemoConfig, run_demo),
                    (BuildRunConfig, build_dataset)]:
        params = inspect.signature(fn).parameters
        for f in dataclasses.fields(cls):
            assert f.name in params, (cls.__name__, f.name)
            d = params[f.name].default
            if d is not inspect.Parameter.empty:
                assert d == f.default, (cls.__name__, f.name, d, f.default)
    from typing import get_args, get_type_hints

    assert get_args(get_type_hints(FetchImageryConfig)["source"]) == tuple(PROVIDERS)
