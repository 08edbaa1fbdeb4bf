import io
import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from transferability.data import DataError, load, prepare, task_view

from .conftest import make_image_folder

CLASSES = ["cat", "dog", "ship"]


def folder(tmp_path, **kw):
    return make_image_folder(tmp_path / "src" / "cifar", classes=CLASSES, **kw)


def tar_of(root, path, prefix="cifar"):
    with tarfile.open(path, "w:gz") as tf:
        tf.add(root, arcname=prefix)
    return path


def no_leftovers(out):
    """Neither the cache nor a temporary file is left behind."""
    return not out.exists() and not (out.parent.exists() and list(out.parent.glob(".*.tmp")))


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_sources_decode_to_the_same_arrays(tmp_path, kind):
    root = folder(tmp_path)
    if kind == "tar.gz":
        src = tar_of(root, tmp_path / "c.tar.gz")
    elif kind == "zip":
        src = tmp_path / "c.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for p in sorted(root.rglob("*.png")):
                zf.write(p, "top/" + p.relative_to(root).as_posix())
    else:
        src = root
    ds = load(prepare(str(src), tmp_path / "out" / "d.npz"))
    ref = load(prepare(str(root), tmp_path / "ref" / "d.npz"))
    assert ds.classes == CLASSES
    assert ds.train_x.shape == (9, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (6, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(ds.train_x, ref.train_x)


def test_any_size_and_mode_becomes_rgb_at_the_configured_size(tmp_path):
    root = tmp_path / "mixed"
    make_image_folder(root, classes=["a"], size=48, mode="L", seed=1)
    make_image_folder(root, classes=["b"], size=20, mode="RGBA", seed=2)
    ds = load(prepare(str(root), tmp_path / "d.npz", image_size=32))
    assert ds.train_x.shape == (6, 3, 32, 32)
    gray = ds.train_x[ds.train_y == 0]
    assert (gray[:, 0] == gray[:, 1]).all()  # grey images expand to equal RGB channels
    small = load(prepare(str(root), tmp_path / "d16.npz", image_size=16))
    assert small.train_x.shape == (6, 3, 16, 16)


def test_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path):
    root = folder(tmp_path)
    out = tmp_path / "d.npz"
    prepare(str(root), out)
    stamp = out.stat().st_mtime_ns
    prepare(str(root), out)
    assert out.stat().st_mtime_ns == stamp
    (root / "train" / "cat" / "0000.png").unlink()
    prepare(str(root), out)
    assert len(load(out).train_x) == 8


def test_missing_source_names_the_path_and_how_to_provide_one(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nowhere.*torchvision"):
        prepare(str(tmp_path / "nowhere"), tmp_path / "d.npz")


def test_unreadable_archive(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(DataError, match=r"broken\.tar\.gz"):
        prepare(str(bad), tmp_path / "d.npz")
    assert no_leftovers(tmp_path / "d.npz")


def test_truncated_archive(tmp_path):
    src = tar_of(folder(tmp_path), tmp_path / "c.tar.gz")
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"c\.tar\.gz"):
        prepare(str(src), tmp_path / "d.npz")
    assert no_leftovers(tmp_path / "d.npz")


def test_no_train_or_test_folder(tmp_path):
    root = folder(tmp_path)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match=r"no ImageFolder layout.*found only train"):
        prepare(str(root), tmp_path / "d.npz")


def test_class_folders_differ_between_train_and_test(tmp_path):
    root = folder(tmp_path)
    (root / "test" / "ship").rename(root / "test" / "boat")
    with pytest.raises(DataError, match=r"only in train: \['ship'\].*only in test: \['boat'\]"):
        prepare(str(root), tmp_path / "d.npz")


@pytest.mark.parametrize("kind", ["folder", "tar.gz"])
def test_class_with_no_images(tmp_path, kind):
    root = folder(tmp_path)
    for p in (root / "test" / "dog").iterdir():
        p.unlink()
    src = root if kind == "folder" else tar_of(root, tmp_path / "c.tar.gz")
    with pytest.raises(DataError, match=r"test/dog has no images"):
        prepare(str(src), tmp_path / "d.npz")


@pytest.mark.parametrize("kind", ["folder", "tar.gz"])
def test_image_that_does_not_decode_is_named_and_no_cache_is_left(tmp_path, kind):
    root = folder(tmp_path)
    (root / "train" / "dog" / "0001.png").write_bytes(b"not an image")
    src = root if kind == "folder" else tar_of(root, tmp_path / "c.tar.gz")
    out = tmp_path / "out" / "d.npz"
    with pytest.raises(DataError, match=r"does not decode: .*train/dog/0001\.png"):
        prepare(str(src), out)
    assert no_leftovers(out)


def test_a_failed_rebuild_keeps_the_previous_cache(tmp_path):
    root = folder(tmp_path)
    out = tmp_path / "d.npz"
    prepare(str(root), out)
    before = out.read_bytes()
    (root / "train" / "dog" / "0001.png").write_bytes(b"not an image")
    with pytest.raises(DataError):
        prepare(str(root), out)
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_task_view_takes_the_first_k_per_class(tmp_path):
    ds = load(prepare(str(folder(tmp_path, n_train=5)), tmp_path / "d.npz"))
    view = task_view(ds, ["ship", "cat"], train_per_class=2)
    assert view.train_y.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(view.train_x[:2], ds.train_x[ds.train_y == 2][:2])
    with pytest.raises(DataError, match="zebra"):
        task_view(ds, ["zebra"])


def test_unreadable_cache_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "d.npz"
    bad.write_bytes(io.BytesIO(b"nonsense").getvalue())
    with pytest.raises(DataError, match=r"d\.npz"):
        load(bad)
