import pytest

from transferability.config import ConfigError, load, parse_overrides


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  epochs: 7\n")
    cfg = load(p, ["train.lr=0.1", "split.random_seeds=[1, 2]", "study.cuts=[2]"])
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.1
    assert cfg.split.random_seeds == [1, 2] and cfg.cuts == [2]
    assert load(p).cuts == [1, 2, 3, 4]
    assert load(p, ["model.arch=alexnet8"]).cuts == list(range(1, 8))
    assert load(p, ["model.arch=transferability.resnet:layers"]).cuts == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epocs=3", r"train\.epocs: Extra inputs"),
        ("trian.epochs=3", r"trian: Extra inputs"),
        ("train.epochs=-1", r"train\.epochs: .*greater than or equal to 1"),
        ("study.cuts=[0, 2]", r"study\.cuts: \[0\] out of range 1\.\.4"),
        ("study.cuts=[5]", r"study\.cuts: \[5\] out of range"),
        ("beyond.datasize_cuts=[5]", r"beyond\.datasize_cuts: \[5\] out of range"),
        ("beyond.datasize_per_class=[25, 250]", r"beyond\.datasize_per_class: 250 is the study's"),
        ("beyond.datasize_per_class=[25, 25]", r"beyond\.datasize_per_class: .*twice"),
        ("split={random_seeds: [], dissimilar: false}", r"random_seeds is empty"),
        ("split.random_seeds=[1, 1]", r"seed twice"),
        ("model.arch=resnet", r"model\.arch: .*unknown architecture 'resnet'"),
        ("model.arch=no_such_pkg.nets:layers", r"model\.arch: .*cannot be imported"),
        ("model.arch=transferability.resnet:nope", r"model\.arch: .*has no 'nope'"),
        ("model.arch=my-pkg.nets:layers", r"model\.arch: .*not package\.module:function"),
        ("study.treatments=[AnB, XnB]", r"study\.treatments\.1"),
        ("study.directions=[]", r"study\.directions: .*must not be empty"),
        ("split.custom={s: {A: [cat, cat], B: [dog]}}", r"split\.custom: .*names \['cat'\] twice"),
    ],
)
def test_bad_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: not valid YAML"):
        load(bad)
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
