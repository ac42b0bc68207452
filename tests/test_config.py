import pytest

from mvm.config import Config, ConfigError, load_config, to_toml


def test_defaults_and_preset_load():
    cfg = load_config("tiny-synthetic")
    assert cfg.model.name == "tiny" and cfg.data.size == 64
    assert cfg.optim.betas == [0.9, 0.95]


def test_overrides_are_typed():
    cfg = load_config("tiny-synthetic", ["mask.ratio=0.75", "data.flip=true", "optim.betas=0.9,0.999",
                                         "train.steps=7", "mask.encoder=random"])
    assert cfg.mask.ratio == 0.75 and cfg.data.flip is True
    assert cfg.optim.betas == [0.9, 0.999] and cfg.train.steps == 7


@pytest.mark.parametrize("override,key", [
    ("mask.ratio=1.0", "mask.ratio"),
    ("mask.ratio=0", "mask.ratio"),
    ("data.frames=15", "data.frames"),
    ("data.size=70", "data.size"),
    ("model.name=enormous", "model.name"),
    ("mask.encoder=psychic", "mask.encoder"),
    ("train.steps=many", "train.steps"),
    ("data.flip=maybe", "data.flip"),
    ("data.motion=optical", "data.motion"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("train.motion_weight=-1", "train.motion_weight"),
    ("train.motion_scale=0", "train.motion_scale"),
    ("data.motion=none", "train.motion_weight"),  # the preset's motion target needs motion
    ("data.cache_mb=-5", "data.cache_mb"),
    ("data.motion_frames=some", "data.motion_frames"),
    ("synth.background_contrast=-1", "synth.background_contrast"),
    ("synth.pan=-1", "synth.pan"),
    ("model.recompute_chunks=-1", "model.recompute_chunks"),
    ("model.recompute_chunks=4", "model.recompute_chunks"),  # without model.checkpointing
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny-synthetic", [override])


def test_unknown_keys_and_sections():
    with pytest.raises(ConfigError, match="unknown key 'mask.ratoi'"):
        load_config(None, ["mask.ratoi=0.5"])
    with pytest.raises(ConfigError, match="unknown section 'mdoel'"):
        load_config(None, ["mdoel.name=tiny"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["mask.ratio"])


def test_bad_toml_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[mask]\nratoi = 0.5\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*mask\.ratoi"):
        load_config(str(f))
    f.write_text("[mask\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(str(f))
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")


def test_to_toml_round_trip(tmp_path):
    cfg = load_config("tiny-synthetic", ["train.out=runs/x \"y\""])
    f = tmp_path / "c.toml"
    f.write_text(to_toml(cfg))
    assert load_config(str(f)) == cfg


def test_every_shipped_preset_is_valid():
    from importlib import resources

    names = [p.name[:-5] for p in (resources.files("mvm") / "presets").iterdir() if p.name.endswith(".toml")]
    assert "tiny-synthetic" in names and len(names) >= 5
    for name in names:
        assert isinstance(load_config(name), Config)
