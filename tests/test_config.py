import pytest

from cropmap.config import BuildConfig, TrainConfig, load_config
from cropmap.errors import CropmapError


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text("epochs: 3\nmodel:\n  name: tempcnn-pixel\n  hidden: 16\n")
    cfg = load_config(TrainConfig, p, lr=0.5, model={"hidden": 8, "embed_dim": None})
    assert (cfg.epochs, cfg.lr, cfg.model.name, cfg.model.hidden, cfg.model.embed_dim) == (3, 0.5, "tempcnn-pixel", 8, 32)
    assert load_config(BuildConfig, None, keep_scl=[4, 5]).keep_scl == (4, 5)


def test_bad_config_files(tmp_path):
    with pytest.raises(CropmapError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    with pytest.raises(CropmapError, match="not valid YAML"):
        load_config(TrainConfig, tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    with pytest.raises(CropmapError, match="unknown option.*epoch"):
        load_config(TrainConfig, tmp_path / "typo.yaml")
