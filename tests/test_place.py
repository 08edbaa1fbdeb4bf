"""Another dataset's results, checkpoints, splits and prepared images never mix with CIFAR-10's."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from transferability.cli import main
from transferability.config import Config
from transferability.data import CIFAR10_CLASSES, DataError, load
from transferability.place import DatasetId, claim, identify, placed, source_classes

from .factories import make_image_folder

OTHER = [f"digit{i}" for i in range(10)]
TINY = [
    "--set",
    "data.train_per_class=4",
    "--set",
    "data.val_per_class=1",
    "--set",
    "data.test_per_class=2",
    "--set",
    "model.width=0.25",
    "--set",
    "train.epochs=1",
    "--set",
    "train.progress=false",
    "--set",
    "study.cuts=[1]",
    "--set",
    "study.treatments=[AnB]",
    "--set",
    "study.mlflow=false",
    "--set",
    "study.workers=1",
    "--set",
    "split.random_seeds=[0]",
]


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_dataset_is_named_by_its_classes_or_its_setting(tmp_path):
    cfg = Config(data={"source": str(tmp_path / "fashion-grey.tar.gz")})
    assert identify(cfg, CIFAR10_CLASSES) == DatasetId("CIFAR-10", CIFAR10_CLASSES)
    assert identify(cfg, CIFAR10_CLASSES).is_reference
    other = identify(cfg, OTHER)
    assert (other.name, other.slug, other.is_reference) == ("fashion-grey", "fashion-grey", False)
    named = Config(data={"source": "x", "name": "My Digits"})
    assert identify(named, OTHER).slug == "my-digits"


def test_a_source_is_known_by_its_class_folders_without_decoding(tmp_path):
    folder = make_image_folder(tmp_path / "digits", classes=OTHER[:3], n_train=1, n_test=1)
    assert source_classes(str(folder), tmp_path / "none.npz") == tuple(OTHER[:3])
    assert source_classes("torchvision", tmp_path / "none.npz") == CIFAR10_CLASSES
    assert source_classes(str(tmp_path / "missing"), tmp_path / "none.npz") is None


def test_another_datasets_paths_move_under_its_name(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    folder = make_image_folder(tmp_path / "digits", classes=OTHER[:3], n_train=1, n_test=1)
    cfg = Config(data={"source": str(folder)})
    moved = placed(cfg, log=lambda _: None)
    assert moved.study.results_dir == str(Path("results/digits"))
    assert moved.study.models_dir == str(Path("models/digits"))
    assert moved.split.dir == str(Path("data/splits/digits"))
    assert moved.data.prepared == str(Path("data/prepared/digits.npz"))
    assert placed(moved, log=lambda _: None) == moved  # placed once, stays
    cifar = Config(data={"source": "torchvision"})
    assert placed(cifar) == cifar
    monkeypatch.setenv("DVC_STAGE", "train_base")  # a stage writes the outputs it declares
    assert placed(cfg) == cfg


def test_a_results_folder_holds_one_datasets_rows(tmp_path):
    cifar = DatasetId("CIFAR-10", CIFAR10_CLASSES)
    claim(tmp_path, cifar)
    claim(tmp_path, cifar)  # the same dataset again
    before = tree(tmp_path)
    with pytest.raises(DataError, match=rf"{tmp_path}/ holds the results of CIFAR-10.*--set"):
        claim(tmp_path, DatasetId("digits", tuple(OTHER)))
    assert tree(tmp_path) == before


def test_the_committed_results_record_their_dataset():
    root = Path(__file__).resolve().parents[1]
    for folder in ("results", "results/whole"):
        d = json.loads((root / folder / "dataset.json").read_text())
        assert (d["name"], tuple(d["classes"])) == ("CIFAR-10", CIFAR10_CLASSES)


def test_a_study_on_other_data_leaves_the_reference_files_alone(tmp_path, monkeypatch, capsys):
    """The README's command with only data.source set (and the dataset's own dissimilar
    groups): its rows, checkpoints, splits and prepared images go under its own folders."""
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = make_image_folder(  # like the issue's: ten classes of 28-pixel grey images
        tmp_path / "src" / "digits", classes=OTHER, n_train=6, n_test=2, size=28, mode="L"
    )
    cifar = make_image_folder(tmp_path / "src" / "cifar", n_train=6, n_test=2)
    main(["study", "--set", f"data.source={cifar}", *TINY, "--set", "split.dissimilar=false"])
    reference = tree(tmp_path / "results") | tree(tmp_path / "data")
    assert json.loads(Path("results/dataset.json").read_text())["name"] == "CIFAR-10"

    groups = "split.dissimilar_groups={low: [digit0, digit1, digit2, digit3], high: [digit4, digit5, digit6, digit7, digit8, digit9]}"  # noqa: E501
    main(["study", "--set", f"data.source={folder}", *TINY, "--set", groups])

    after = tree(tmp_path / "results") | tree(tmp_path / "data")
    assert {k: v for k, v in after.items() if k in reference} == reference
    runs = pd.read_csv("results/digits/runs.csv")
    assert set(runs.split) == {"random0", "dissimilar"}
    assert json.loads(Path("results/digits/dataset.json").read_text())["name"] == "digits"
    assert Path("data/splits/digits/dissimilar.json").is_file()
    assert Path("data/prepared/digits.npz").is_file()
    summary = json.loads(Path("results/digits/summary.json").read_text())
    assert summary["dataset"]["name"] == "digits"
    assert summary["dataset"]["dissimilar_groups"] == ["low", "high"]
    said = capsys.readouterr().out
    assert "data: digits (not CIFAR-10): its files go to" in said
    conversions = "80 grey (L) images made RGB; 80 images resized from 28×28 to 32×32"
    assert load("data/prepared/digits.npz").conversions == conversions
    assert conversions in said
