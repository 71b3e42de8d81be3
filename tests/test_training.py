"""Training: kill-and-resume equals an uninterrupted run, early stopping, config checks, Trainer arguments."""

import json
import shutil
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml

from cropmap.cli import main
from cropmap.config import ModelConfig, TrainConfig, load_config
from cropmap.configfile import config_yaml, field_comments
from cropmap.errors import CropmapError
from cropmap.training import (LAST_NAME, AtomicCheckpointIO, check_config, make_datasets, resolve_deterministic,
                           resolve_precision, train_model, trainer_arguments)

TINY = ModelConfig(hidden=8, embed_dim=8, unet_base=8, temporal_layers=2)
# every source of randomness on: shuffling, flips, crops, date dropout, temporal crop, dropout
RESUME_CONFIG = TrainConfig(model=TINY, epochs=3, min_steps=0, batch_size=1, crop=16, date_dropout=0.2, temporal_crop=0.7,
                            loss="focal", class_weights="effective", threads=1, lr=5e-3)


def _train_argv(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), *map(str, extra)]


def _train_and_kill_after(data, out, cfg, epochs_done: int) -> None:
    """Start ``cropmap train`` in a subprocess and SIGKILL it once its state after ``epochs_done`` is on disk."""
    last = out / LAST_NAME
    proc = subprocess.Popen([sys.executable, "-m", "cropmap", *_train_argv(data, out, "--config", cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        # the state is renamed into place complete, so reading it while training goes on is safe
        if last.exists() and torch.load(last, weights_only=True)["cropmap"]["epochs_done"] == epochs_done:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "model.pt").exists()


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """Run A uninterrupted; run B killed (SIGKILL) once its epoch-2 state is on disk, kept as it was, then resumed."""
    root = tmp_path_factory.mktemp("resume")
    cfg = root / "train.yaml"
    cfg.write_text(config_yaml(RESUME_CONFIG))
    assert main(_train_argv(tiny_dataset, root / "A", "--config", cfg)) == 0

    b = root / "B"
    _train_and_kill_after(tiny_dataset, b, cfg, epochs_done=2)
    killed = root / "B-killed"
    shutil.copytree(b, killed)
    assert main(_train_argv(tiny_dataset, b, "--resume")) == 0  # the run's own config.yaml
    return root / "A", b, killed


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_uninterrupted_weights_and_metrics(runs):
    a, b, _ = runs
    ca, cb = torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    for k in ("best_epoch", "best_val_miou", "class_counts", "class_weights"):
        assert ca["extra"][k] == cb["extra"][k], k
    # the best epoch may come before the kill: the last epoch's full state must match as well
    la, lb = torch.load(a / LAST_NAME, weights_only=True), torch.load(b / LAST_NAME, weights_only=True)
    assert la["cropmap"]["epochs_done"] == lb["cropmap"]["epochs_done"] == 3
    for k in la["state_dict"]:
        assert torch.equal(la["state_dict"][k], lb["state_dict"][k]), k
    adam_a, adam_b = la["optimizer_states"][0]["state"], lb["optimizer_states"][0]["state"]
    assert all(torch.equal(adam_a[i]["exp_avg_sq"], adam_b[i]["exp_avg_sq"]) for i in adam_a)
    assert la["lr_schedulers"] == lb["lr_schedulers"]
    # the log keeps the epochs before the kill and matches the uninterrupted one row for row
    assert (a / "logs/metrics.csv").read_text() == (b / "logs/metrics.csv").read_text()
    assert json.loads((a / "classes.json").read_text()) == json.loads((b / "classes.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("epochs_done", [1, 2])
def test_kill_and_resume_again_gives_the_same_weights(runs, tiny_dataset, tmp_path, epochs_done):
    """The fault injection repeated (3 kills in all with the fixture's), at another epoch too."""
    a = runs[0]
    _train_and_kill_after(tiny_dataset, tmp_path / "run", a / "config.yaml", epochs_done)
    assert main(_train_argv(tiny_dataset, tmp_path / "run", "--resume")) == 0
    ca = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    cb = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_resume_state_is_saved_every_epoch_and_loads_with_weights_only(runs):
    _, b, killed = runs
    state = torch.load(killed / LAST_NAME, weights_only=True)
    assert state["cropmap"]["epochs_done"] == 2 and state["epoch"] == 1
    assert state["optimizer_states"] and state["lr_schedulers"] and any("RandomState" in k for k in state["callbacks"])
    assert torch.load(b / LAST_NAME, weights_only=True)["cropmap"]["epochs_done"] == 3


def test_resume_refuses_a_different_config_naming_the_fields(runs, tiny_dataset, capsys):
    _, _, killed = runs
    assert main(_train_argv(tiny_dataset, killed, "--resume", "--lr", "0.5", "--patience", "2")) == 2
    err = capsys.readouterr().err
    assert "--resume with a different config" in err and "lr: 0.005 -> 0.5" in err and "patience: 0 -> 2" in err
    assert not (killed / "model.pt").exists()


def test_an_interrupted_run_is_not_restarted_silently(runs, tiny_dataset, capsys):
    _, _, killed = runs
    assert main(_train_argv(tiny_dataset, killed, "--epochs", "3")) == 2
    assert "holds an interrupted run (pass --resume" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so(runs, tiny_dataset, capsys):
    a, _, _ = runs
    assert main(_train_argv(tiny_dataset, a, "--resume")) == 2
    assert "the run is already finished" in capsys.readouterr().err


def test_a_damaged_resume_state_is_named(runs, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[2], run)
    data = (run / LAST_NAME).read_bytes()
    (run / LAST_NAME).write_bytes(data[: len(data) // 2])
    assert main(_train_argv(tiny_dataset, run, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{run / LAST_NAME}: not a readable training state" in err and len(err.strip().splitlines()) == 1


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)

    def half_write(checkpoint, filepath):  # what a kill in the middle of a write leaves
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        raise OSError("killed")

    monkeypatch.setattr(torch_io, "_atomic_save", half_write)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_early_stopping_on_val_miou(tiny_dataset, tmp_path):
    # a learning rate far too high: val mIoU soon stops improving
    cfg = TrainConfig(model=TINY, epochs=8, min_steps=0, batch_size=2, lr=0.5, patience=2, threads=1, augment=False)
    s = train_model(tiny_dataset, tmp_path / "run", cfg)
    assert s.stopped_epoch is not None and s.stopped_epoch == s.best_epoch + 2
    assert s.epochs_run == s.stopped_epoch + 1 < 8
    rows = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == {str(e) for e in range(s.stopped_epoch + 1)}
    ck = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert ck["extra"]["stopped_epoch"] == s.stopped_epoch


def test_val_patches_are_never_augmented(tiny_dataset):
    train, val = make_datasets(tiny_dataset, TrainConfig(crop=16, date_dropout=0.3, temporal_crop=0.5))
    assert (train.augment, train.crop, train.date_dropout, train.temporal_crop) == (True, 16, 0.3, 0.5)
    assert (val.augment, val.crop, val.date_dropout, val.temporal_crop) == (False, None, 0.0, 1.0)


def test_config_reaches_the_trainer_on_cpu():
    cfg = TrainConfig(devices=1, num_nodes=1, strategy="auto", accelerator="cpu", epochs=4, val_every=2)
    args = trainer_arguments(cfg)
    assert (args["devices"], args["num_nodes"], args["strategy"], args["precision"]) == (1, 1, "auto", "32-true")
    assert args["deterministic"] is True
    trainer = L.Trainer(**args, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    assert (trainer.num_devices, trainer.num_nodes, trainer.max_epochs, trainer.check_val_every_n_epoch) == (1, 1, 4, 2)
    assert trainer.precision == "32-true" and trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    ddp = L.Trainer(**trainer_arguments(TrainConfig(strategy="ddp", accelerator="cpu", precision="bf16-mixed")),
                    logger=False, enable_progress_bar=False, enable_checkpointing=False)
    assert ddp.strategy.__class__.__name__ == "DDPStrategy" and ddp.precision == "bf16-mixed"


def test_precision_and_determinism_auto_depend_on_the_device():
    assert resolve_deterministic(TrainConfig(accelerator="gpu")) == "warn"  # bilinear backward has no CUDA kernel
    assert resolve_deterministic(TrainConfig(accelerator="cpu")) is True
    assert resolve_deterministic(TrainConfig(accelerator="gpu", deterministic=False)) is False
    assert resolve_precision(TrainConfig(accelerator="gpu")) == "bf16-mixed"
    assert resolve_precision(TrainConfig(accelerator="cpu")) == "32-true"
    assert resolve_precision(TrainConfig(precision="32")) == "32-true"
    assert resolve_precision(TrainConfig(precision="16-mixed")) == "16-mixed"


def test_bf16_mixed_on_cpu_with_tensorboard_logs(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    argv = _train_argv(tiny_dataset, tmp_path / "run", "--epochs", "1", "--max-steps", "2", "--batch-size", "2",
                       "--hidden", "8", "--embed-dim", "8", "--unet-base", "8", "--precision", "bf16-mixed",
                       "--logger", "tensorboard", "--accelerator", "cpu", "--resume")
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("no run to resume; starting a new one")  # what a first SLURM job sees
    first = out[1]  # printed before training starts
    assert first.startswith("tempcnn-unet: ") and first.endswith(" parameters")
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "logs" / "metrics.csv").exists() and (tmp_path / "run" / "model.pt").exists()


def test_print_config_documents_every_field_and_cli_wins_over_the_file(tmp_path, capsys):
    f = tmp_path / "mine.yaml"
    f.write_text("epochs: 3\nlr: 0.01\nmodel:\n  hidden: 16\n")
    assert main(["train", "--print-config", "--config", str(f), "--epochs", "7", "--loss", "focal"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(text)
    cfg = load_config(TrainConfig, tmp_path / "printed.yaml")
    assert (cfg.epochs, cfg.lr, cfg.model.hidden, cfg.loss) == (7, 0.01, 16, "focal")
    top = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert len(top) == len(TrainConfig.__dataclass_fields__)
    assert all("  # " in ln for ln in top), [ln for ln in top if "  # " not in ln]
    assert set(field_comments(TrainConfig)) == set(TrainConfig.__dataclass_fields__)


def test_the_run_keeps_its_resolved_config(runs):
    a, _, _ = runs
    assert load_config(TrainConfig, a / "config.yaml") == RESUME_CONFIG
    assert "# passes over the training patches" in (a / "config.yaml").read_text()


def test_train_needs_data_and_out(capsys):
    assert main(["train", "--epochs", "2"]) == 2
    assert "--data and --out are required" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"loss": "dice"}, "loss 'dice': expected one of ce, focal"),
    ({"class_weights": "sqrt"}, "class_weights 'sqrt'"),
    ({"precision": "8"}, "precision '8'"),
    ({"logger": "wandb"}, "logger 'wandb'"),
    ({"lr": "1e-3"}, "lr '1e-3': expected a number"),
    ({"date_dropout": 1.5}, "date_dropout 1.5"),
    ({"patience": -1}, "patience -1"),
    ({"epochs": 0}, "epochs 0"),
    ({"deterministic": "yes"}, "deterministic 'yes'"),
])
def test_bad_config_values_are_named(change, message):
    with pytest.raises(CropmapError, match=message.replace("(", r"\(")):
        check_config(TrainConfig(**change))


def test_yaml_round_trip_of_a_config_file(tmp_path):
    cfg = TrainConfig(model=ModelConfig(name="tempcnn-pixel", options={"widths": [8, 16]}), devices="auto",
                      deterministic="warn", lr=1e-5, levels=("crop", "group"))
    (tmp_path / "c.yaml").write_text(config_yaml(cfg, "header line"))
    assert load_config(TrainConfig, tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["model"]["options"] == {"widths": [8, 16]}
