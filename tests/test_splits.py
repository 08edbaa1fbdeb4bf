import pytest

from transferability.config import Config, ConfigError, load
from transferability.splits import (
    Split,
    configured_splits,
    dissimilar_split,
    make_splits,
    random_split,
    write_splits,
)

from .factories import CLASSES


def test_same_seed_same_split_and_different_seeds_differ():
    assert random_split(CLASSES, 3) == random_split(CLASSES, 3)
    splits = {(random_split(CLASSES, s).A) for s in range(6)}
    assert len(splits) > 1


@pytest.mark.parametrize("seed", range(5))
def test_random_split_is_disjoint_and_covers_all_classes(seed):
    s = random_split(CLASSES, seed)
    assert len(s.A) == len(s.B) == 5
    assert not set(s.A) & set(s.B)
    assert sorted(s.A + s.B) == sorted(CLASSES)


def test_the_default_dissimilar_split_is_vehicles_against_animals():
    (s,) = configured_splits(Config(split={"random_seeds": []}), CLASSES)
    assert s.kind == "dissimilar"
    assert s.A == ("airplane", "automobile", "ship", "truck")
    assert s.B == ("bird", "cat", "deer", "dog", "frog", "horse")


def test_the_dissimilar_split_takes_its_groups_from_the_settings():
    groups = {"odd": ["a1", "a3"], "even": ["a0", "a2", "a4"]}
    s = dissimilar_split(["a0", "a1", "a2", "a3", "a4"], groups)
    assert (s.kind, s.A, s.B) == ("dissimilar", ("a1", "a3"), ("a0", "a2", "a4"))


def test_the_dissimilar_split_on_other_classes_names_the_settings_to_change():
    with pytest.raises(ValueError, match=r"split.dissimilar_groups .*split.dissimilar=false"):
        make_splits([f"c{i}" for i in range(10)], [0], True)


def test_groups_must_be_two_disjoint_named_lists():
    with pytest.raises(ConfigError, match=r"split\.dissimilar_groups"):
        load(None, ["split.dissimilar_groups={a: [cat], b: [cat, dog]}"])
    with pytest.raises(ConfigError, match=r"split\.dissimilar_groups"):
        load(None, ["split.dissimilar_groups={a: [cat]}"])


def test_a_split_file_of_another_dataset_is_never_overwritten(tmp_path):
    cfg = Config(split={"random_seeds": [0], "dissimilar": False, "dir": str(tmp_path)})
    ((path, _),) = write_splits(cfg, CLASSES)
    before = path.read_bytes()
    other = [f"c{i}" for i in range(10)]
    with pytest.raises(ValueError, match=rf"{path}.*another dataset.*split.dir"):
        write_splits(cfg, other)
    assert path.read_bytes() == before
    write_splits(cfg, CLASSES)  # the same dataset rewrites its own


def test_split_roundtrips_through_json(tmp_path):
    s = random_split(CLASSES, 1)
    s.save(tmp_path / "s.json")
    assert Split.load(tmp_path / "s.json") == s


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([*CLASSES[:5], "bird"], CLASSES[5:], "twice"),
        (CLASSES[:6], CLASSES[5:], "in both A and B"),
        (CLASSES[:4], CLASSES[5:], "in neither"),
        (CLASSES[:5], [*CLASSES[5:], "zebra"], "not in the dataset"),
    ],
)
def test_custom_split_errors_name_the_classes(a, b, message):
    with pytest.raises(ValueError, match=message):
        make_splits(CLASSES, [], False, {"mine": {"A": a, "B": b}})


def test_labels_are_remapped_per_task():
    from transferability import data

    from .factories import learnable_dataset

    ds = learnable_dataset(n_train=2, n_test=1)
    s = random_split(ds.classes, 0)
    view = data.task_view(ds, s.classes("B"))
    assert sorted(set(view.train_y.tolist())) == [0, 1, 2, 3, 4]
    # label k of the task is the k-th class of B
    for k, cls in enumerate(s.B):
        orig = ds.classes.index(cls)
        assert (view.train_x[view.train_y == k] == ds.train_x[ds.train_y == orig]).all()
