import pytest

from transferability.splits import Split, dissimilar_split, make_splits, random_split

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


def test_dissimilar_split_is_vehicles_against_animals():
    s = dissimilar_split(CLASSES)
    assert set(s.A) == {"airplane", "automobile", "ship", "truck"}
    assert set(s.B) == {"bird", "cat", "deer", "dog", "frog", "horse"}


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
