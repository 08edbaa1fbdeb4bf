import io
import re
import shutil
import struct
import tarfile
import warnings
import zipfile
import zlib
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from transferability import data
from transferability.data import DataError, load, prepare, task_view

from .factories import make_image_folder

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


@pytest.mark.parametrize(
    "failure",
    [
        URLError("[Errno -2] Name or service not known"),
        RuntimeError("File not found or corrupted."),
    ],
)
def test_torchvision_offline_says_how_to_use_a_local_copy(tmp_path, monkeypatch, failure):
    """Offline, torchvision's download fails with an OSError (urllib's URLError): the error
    says so and names data.source, not a full disk."""
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=r"could not be downloaded.*data\.source"):
        prepare("torchvision", tmp_path / "d.npz", root=tmp_path / "raw")
    assert not (tmp_path / "d.npz").exists()


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


# --------------------------------------------------------------------------- robustness


def png_header(width, height):
    """A tiny PNG that declares width x height 8-bit grey pixels (a decompression bomb)."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))  # one row of the many declared
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_keeps_its_value_range(tmp_path, fmt):
    root = folder(tmp_path)
    values = np.arange(32 * 32, dtype=np.int64).reshape(32, 32) * 64  # 0 .. 65472
    values[0, :4] = [0, 257, 128 * 257, 65535]
    im = Image.fromarray(values.astype(np.uint16) if fmt == "PNG" else values.astype(np.int32))
    assert im.mode == ("I;16" if fmt == "PNG" else "I")
    im.save(root / "train" / "cat" / "0000.png", fmt)
    ds = load(prepare(str(root), tmp_path / "d.npz"))
    got = ds.train_x[0].astype(np.int64)
    assert got[0, 0, :4].tolist() == [0, 1, 128, 255]
    assert np.abs(got - values / 257).max() <= 0.5
    assert (got[0] == got[1]).all() and (got[0] == got[2]).all()


@pytest.mark.parametrize(
    ("mode", "value"), [("I", 70000), ("I", -1), ("F", 0.5)], ids=["I-big", "I-negative", "F"]
)
def test_pixel_values_of_unknown_range_are_refused(tmp_path, mode, value):
    root = folder(tmp_path)
    Image.new(mode, (32, 32), value).save(root / "test" / "dog" / "0001.png", "TIFF")
    with pytest.raises(DataError, match=r"test/dog/0001\.png.*values"):
        prepare(str(root), tmp_path / "d.npz")


def test_8_bit_images_decode_bit_for_bit(tmp_path):
    root = tmp_path / "mixed"
    for cls, mode in (("a", "L"), ("b", "RGB"), ("c", "RGBA")):
        make_image_folder(root, classes=[cls], mode=mode, seed=len(cls + mode))
    ds = load(prepare(str(root), tmp_path / "d.npz"))
    for name, x in (("train", ds.train_x), ("test", ds.test_x)):
        files = sorted((root / name).glob("*/*.png"))
        want = [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files]
        np.testing.assert_array_equal(x, np.stack(want))


@pytest.mark.parametrize("side", [20000, 10000, 5000])  # PIL: error, PIL: warning, ours only
def test_decompression_bomb_is_refused_before_decoding(tmp_path, side):
    root = folder(tmp_path)
    (root / "train" / "dog" / "0002.png").write_bytes(png_header(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks either
        with pytest.raises(
            DataError, match=rf"too large: .*train/dog/0002\.png \(.*\b{side * side} pixels"
        ):
            prepare(str(root), tmp_path / "d.npz")


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_oversized_member_is_refused_unread_unless_unused(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 50_000)
    root = folder(tmp_path)
    (root / "notes.bin").write_bytes(b"\0" * 60_000)  # outside the layout: never read, fine
    if kind == "tar":
        src = tmp_path / "c.tar"
        with tarfile.open(src, "w") as tf:
            tf.add(root, arcname="cifar")
    elif kind == "zip":
        src = tmp_path / "c.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for p in sorted(root.rglob("*")):
                zf.write(p, p.relative_to(root).as_posix())
    else:
        src = root
    assert load(prepare(str(src), tmp_path / "ok.npz")).train_x.shape == (9, 3, 32, 32)

    big, size = "train/ship/0009.png", 200_000
    if kind == "tar":
        info = tarfile.TarInfo(f"cifar/{big}")
        info.size = size
        with tarfile.open(src, "a") as tf:
            tf.addfile(info, io.BytesIO(bytes(size)))
    elif kind == "zip":
        with zipfile.ZipFile(src, "a") as zf:
            zf.writestr(big, bytes(size), zipfile.ZIP_DEFLATED)
    else:
        (root / big).write_bytes(bytes(size))
    opened = []  # what the archive readers were asked to open
    for cls, method in ((tarfile.TarFile, "extractfile"), (zipfile.ZipFile, "open")):
        orig = getattr(cls, method)
        monkeypatch.setattr(
            cls,
            method,
            lambda self, m, *a, _o=orig, **k: (
                opened.append(getattr(m, "name", m)) or _o(self, m, *a, **k)
            ),
        )
    with pytest.raises(DataError, match=rf"too large: .*{re.escape(big)} \({size} bytes"):
        prepare(str(src), tmp_path / "d.npz")
    assert not [n for n in opened if n.endswith(big)]


def test_truncated_zip_is_reported_as_a_zip(tmp_path):
    src = tmp_path / "c.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for p in sorted(folder(tmp_path).rglob("*.png")):
            zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cannot be read: .*c\.zip \(truncated or damaged zip"):
        prepare(str(src), tmp_path / "d.npz")
    assert no_leftovers(tmp_path / "d.npz")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_cache_says_to_delete_it_and_is_rebuilt_by_prepare(tmp_path, damage):
    root = folder(tmp_path)
    out = prepare(str(root), tmp_path / "d.npz")
    blob = out.read_bytes()
    out.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"")
    with pytest.raises(DataError) as e:
        load(out)
    assert re.search(
        r"d\.npz.*\(\w.*\).*delete it and re-run `transferability prepare`", str(e.value)
    )
    load(prepare(str(root), out))  # a damaged cache is stale: prepare writes a fresh one
