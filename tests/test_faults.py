"""Issue #28: the faults found by injection on a tiny study, replayed. Each ends with a clear
error that names its input and what to do, or with the right result; none loses or mixes a
row, a checkpoint or an MLflow run."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from transferability import config, data
from transferability.cli import main
from transferability.io import md5_file
from transferability.models import load_checkpoint
from transferability.networks import COLUMNS, CheckpointMismatch
from transferability.runner import (
    TableError,
    locked,
    locked_models,
    merge_runs,
    prune,
    read_runs,
    reproduce,
    run_study,
    write_runs,
)
from transferability.similarity import layer_similarity
from transferability.splits import make_splits
from transferability.tracking import store as tracking_store
from transferability.tracking.tracker import Tracker
from transferability.train import processor

from .factories import make_image_folder, make_repro_dry, shell_words

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda *_: None}


def with_(cfg, section, **kw):
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=kw)})


def small(cfg, **study):
    """Two bases, B1B and A1A, no MLflow unless asked."""
    return with_(cfg, "study", **{"cuts": [1], "treatments": ["BnB"], "mlflow": False, **study})


def ckpt(cfg, name: str) -> Path:
    kind = "bases" if name.startswith("base") else "transfers"
    return Path(cfg.study.models_dir, kind, "random0", "s0", f"{name}.pt")


def edit(path: Path, line: int, column: str, value: str) -> None:
    """Set one cell of a table as an editor would, leaving every other byte as it was."""
    lines = path.read_text().splitlines(True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


def fake_rows(n: int) -> list[dict]:
    """n valid rows of made-up networks."""
    return [
        {k: "" for k in COLUMNS}
        | {"network": f"random0/s0/net{i}", "fingerprint": "f", "test_acc": "0.5"}
        | {"val_acc": "0.5", "train_acc": "0.9", "train_loss": "0.1", "seconds": "1.0"}
        for i in range(n)
    ]


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["transferability", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


@contextmanager
def at_most(seconds: int):
    """A hang becomes a failure."""

    def hung(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ 1. analyze --runs


def test_analyze_with_a_part_of_the_table_refuses_and_keeps_it(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    table = tmp_path / "results" / "runs.csv"
    write_runs(table, fake_rows(22))
    before = table.read_bytes()
    (tmp_path / "extra.csv").write_text("".join(before.decode().splitlines(True)[:3]))
    code, out = cli(monkeypatch, capsys, "analyze", "--runs", "extra.csv")
    assert code == 2 and "would drop" in out and "results/runs.csv" in out
    assert table.read_bytes() == before  # 22 rows, as they were
    # the same network in two tables given, with two results: named, nothing written
    other = fake_rows(1)
    other[0]["test_acc"] = "0.7"
    write_runs(tmp_path / "other.csv", other)
    with pytest.raises(TableError, match=r"net0 is in both .*extra\.csv and .*other\.csv"):
        merge_runs([tmp_path / "extra.csv", tmp_path / "other.csv"], table)
    # adding to the table is what a merge does; it takes the table's lock
    write_runs(tmp_path / "new.csv", [dict(fake_rows(23)[-1])])
    with locked(table), pytest.raises(RuntimeError, match="another study is writing"):
        merge_runs([table, tmp_path / "new.csv"], table)
    assert len(merge_runs([table, tmp_path / "new.csv"], table)) == 23
    assert len(read_runs(table)) == 23


# ------------------------------------------------------------------ 2. damaged bases


def flip_a_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    path.write_bytes(bytes(b))


def test_a_damaged_base_is_never_copied_nor_read(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, **QUIET)
    good = {r["network"]: r for r in read_runs(runs)}
    flip_a_byte(ckpt(cfg, "baseB"))  # its meta still reads:
    assert torch.load(ckpt(cfg, "baseB"), weights_only=True)["meta"]["network"].endswith("baseB")
    ckpt(cfg, "B1B").unlink()
    before = runs.read_bytes()
    with pytest.raises(CheckpointMismatch, match=r"baseB.*train-bases"):
        run_study(cfg, splits, ds, runs, which="transfers", **QUIET)
    assert runs.read_bytes() == before and not ckpt(cfg, "B1B").exists()
    with pytest.raises(FileNotFoundError, match=r"4 checkpoint\(s\) to read are not on this"):
        layer_similarity(with_(cfg, "beyond", blocks=1), splits, ds, **QUIET)  # no AnB+, BnB+
    for name in ("A1B+", "B1B+", "B1A+", "A1A+"):  # there (unread: the bases are read first)
        ckpt(cfg, name).write_bytes(b"")
    with pytest.raises(CheckpointMismatch, match=r"baseB\.pt is damaged"):
        layer_similarity(with_(cfg, "beyond", blocks=1), splits, ds, **QUIET)
    for name in ("A1B+", "B1B+", "B1A+", "A1A+"):
        ckpt(cfg, name).unlink()
    with pytest.raises(ValueError, match=r"baseB\.pt is damaged"):
        load_checkpoint(ckpt(cfg, "baseB"))
    msgs = []
    run_study(cfg, splits, ds, runs, log=msgs.append)  # the whole study repairs itself
    assert "2 done, 2 to train" in msgs[0]
    assert any("random0/s0/baseB: retrained" in m for m in msgs)
    rows = {r["network"]: r for r in read_runs(runs)}
    assert rows["random0/s0/B1B"]["source_md5"] == rows["random0/s0/baseB"]["checkpoint_md5"]
    assert rows["random0/s0/baseB"]["checkpoint_md5"] == md5_file(ckpt(cfg, "baseB"))
    assert rows["random0/s0/B1B"]["test_acc"] == good["random0/s0/B1B"]["test_acc"]


def test_a_base_is_copied_only_with_the_bytes_its_row_records(tiny_study, tmp_path):
    """A readable, undamaged baseB whose bytes are not its row's (replaced) is not copied, and
    a network that copied a base other than its table's is retrained."""
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, **QUIET)
    payload = torch.load(ckpt(cfg, "baseB"), weights_only=True)
    payload["meta"]["note"] = "replaced"
    torch.save(payload, ckpt(cfg, "baseB"))
    ckpt(cfg, "B1B").unlink()
    with pytest.raises(CheckpointMismatch, match=r"baseB.*not the one its row records"):
        run_study(cfg, splits, ds, runs, which="transfers", **QUIET)
    rows = read_runs(runs)
    for r in rows:
        if r["network"] == "random0/s0/A1A":
            r["source_md5"] = "0" * 32  # as if it had copied a damaged baseA
    write_runs(runs, rows)
    msgs = []
    run_study(cfg, splits, ds, runs, log=msgs.append)
    assert any("A1A: retrained: it copied another random0/s0/baseA" in m for m in msgs)
    rows = {r["network"]: r for r in read_runs(runs)}
    for copy, base in (("A1A", "baseA"), ("B1B", "baseB")):
        src = rows[f"random0/s0/{base}"]["checkpoint_md5"]
        assert rows[f"random0/s0/{copy}"]["source_md5"] == src == md5_file(ckpt(cfg, base))


def test_the_dvc_stages_check_a_base_against_its_row_in_the_bases_table(tiny_study, tmp_path):
    """transfer and datasize keep their rows apart from the bases' (runs_bases.csv): --bases
    names that table, and a replaced base is refused there too."""
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    bases, transfers = tmp_path / "runs_bases.csv", tmp_path / "runs_transfers.csv"
    run_study(cfg, splits, ds, bases, which="bases", **QUIET)
    payload = torch.load(ckpt(cfg, "baseB"), weights_only=True)
    payload["meta"]["note"] = "replaced"
    torch.save(payload, ckpt(cfg, "baseB"))
    with pytest.raises(CheckpointMismatch, match=r"baseB.*not the one its row records"):
        run_study(cfg, splits, ds, transfers, which="transfers", bases=bases, **QUIET)
    assert read_runs(transfers) == [] and not ckpt(cfg, "B1B").exists()
    run_study(cfg, splits, ds, bases, which="bases", **QUIET)  # retrained
    rows = run_study(cfg, splits, ds, transfers, which="transfers", bases=bases, **QUIET)
    md5 = {r["network"]: r["checkpoint_md5"] for r in read_runs(bases)}
    assert {r["source_md5"] for r in rows} <= set(md5.values()) and len(rows) == 2


# ------------------------------------------------------------------ 3. prune


def test_prune_is_a_dry_run_unless_told_and_leaves_no_run_running(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg, mlflow=True, treatments=["AnB"])
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, which="bases", **QUIET)
    before = runs.read_bytes()
    other = make_splits(ds.classes, [1], False)  # a wrong override: split.random_seeds=[1]
    msgs = []
    dropped = prune(cfg, other, ds, runs, log=msgs.append)
    assert len(dropped) == 2 and runs.read_bytes() == before
    assert "would drop 2 row(s)" in msgs[0] and "--yes" in msgs[0]
    client = MlflowClient(tracking_store.tracking_uri())
    exp = client.get_experiment_by_name(tracking_store.EXPERIMENT).experiment_id
    every = client.search_runs([exp])
    assert not [r for r in every if r.info.status == "RUNNING"]
    assert len([r for r in every if r.data.tags.get("role") == "study"]) == 1  # none made
    prune(cfg, splits, ds, runs, yes=True, **QUIET)  # nothing to drop
    assert runs.read_bytes() == before
    assert prune(cfg, other, ds, runs, yes=True, **QUIET) == dropped
    assert read_runs(runs) == []


# ------------------------------------------------------------------ 4. shared models_dir


def test_a_second_study_writing_the_same_checkpoints_is_refused(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    other = with_(with_(cfg, "train", lr=0.01), "study", results_dir=str(tmp_path / "other"))
    busy = pytest.raises(RuntimeError, match="another study is writing checkpoints in")
    with locked_models(cfg.study.models_dir), busy:  # the first study is still running
        run_study(other, splits, ds, tmp_path / "other" / "runs.csv", **QUIET)
    assert not Path(cfg.study.models_dir, "bases").exists()
    assert read_runs(tmp_path / "other" / "runs.csv") == []


# ------------------------------------------------------------------ 5, 6. MLflow


def test_a_full_disk_is_not_waited_for_as_a_locked_store():
    calls = []

    def full(*_):
        calls.append(1)
        raise MlflowException(
            "(sqlite3.OperationalError) database or disk is full",
            error_code="TEMPORARILY_UNAVAILABLE",
        )

    t = time.monotonic()
    with pytest.raises(MlflowException, match="disk is full"):
        tracking_store.retry(full)
    assert len(calls) == 1 and time.monotonic() - t < 5
    locked_db = MlflowException("database is locked", error_code="TEMPORARILY_UNAVAILABLE")
    assert tracking_store._transient(locked_db)


def test_runs_left_running_by_a_kill_are_repaired_on_the_next_start(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg, mlflow=True)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, which="bases", **QUIET)
    client = MlflowClient(tracking_store.tracking_uri())
    exp = client.get_experiment_by_name(tracking_store.EXPERIMENT).experiment_id
    (parent,) = client.search_runs([exp], "tags.role = 'study'")
    # kill -9 inside log_network of baseA: its old run deleted, the new one RUNNING, its model
    # PENDING
    (old,) = client.search_runs([exp], "tags.network = 'random0/s0/baseA'")
    for out in old.outputs.model_outputs:
        client.delete_logged_model(out.model_id)
    client.delete_run(old.info.run_id)
    tags = {"mlflow.parentRunId": parent.info.run_id, "network": "random0/s0/baseA"}
    half = client.create_run(exp, tags=tags)
    model = client.create_logged_model(exp, name="half", source_run_id=half.info.run_id)
    assert model.status.name == "PENDING"
    msgs = []
    run_study(cfg, splits, ds, runs, which="bases", log=msgs.append)
    assert any("1 run(s) a killed study left unfinished" in m for m in msgs)
    runs_a = client.search_runs([exp], "tags.network = 'random0/s0/baseA'")
    assert [r.info.status for r in runs_a] == ["FINISHED"]
    assert runs_a[0].info.run_id != half.info.run_id
    models = client.search_logged_models([exp])
    assert len(models) == 2 and all(m.status.name == "READY" for m in models)
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")


# ------------------------------------------------------------------ 7, 8. edited tables


def test_a_duplicated_line_is_named_not_resolved(monkeypatch, capsys, tmp_path):
    table = tmp_path / "results" / "runs.csv"
    write_runs(table, fake_rows(3))
    lines = table.read_text().splitlines(True)
    table.write_text("".join([*lines, lines[2]]))  # as a merge of two branches leaves it
    with pytest.raises(TableError, match=r"net1 is on line 3 and on line 5"):
        read_runs(table)
    with pytest.raises(TableError):
        write_runs(table, fake_rows(3))  # nor is the table written over
    monkeypatch.chdir(tmp_path)
    code, out = cli(monkeypatch, capsys, "analyze")
    assert code == 2 and "net1 is on line 3 and on line 5" in out
    assert "non-unique" not in out


def test_edited_rows_are_refused_or_retrained_never_used(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, **QUIET)
    good = runs.read_text()
    # an accuracy that is not a number: named with its line and column, nothing trained
    edit(runs, 3, "test_acc", "n/a")
    edited = runs.read_text()
    with pytest.raises(TableError, match=r"runs\.csv line 3 \(random0/s0/baseB\): test_acc"):
        run_study(cfg, splits, ds, runs, **QUIET)
    assert runs.read_text() == edited
    for col, bad in (
        ("test_acc", "1.5"),
        ("test_acc", "nan"),
        ("train_acc", ""),
        ("seconds", "-1"),
    ):
        runs.write_text(good)
        edit(runs, 3, col, bad)
        with pytest.raises(TableError, match=rf"line 3 \(random0/s0/baseB\): {col}"):
            read_runs(runs)
    # a number edited: its checkpoint says otherwise, so the network is trained again
    runs.write_text(good)
    edit(runs, 3, "test_acc", "0.999")
    msgs = []
    run_study(cfg, splits, ds, runs, log=msgs.append)
    assert any("baseB: retrained: its row's test_acc 0.999" in m for m in msgs)
    timeless = [{k: v for k, v in r.items() if k != "seconds"} for r in read_runs(runs)]
    runs.write_text(good)
    assert timeless == [{k: v for k, v in r.items() if k != "seconds"} for r in read_runs(runs)]
    # a column of the user's own is kept through the next write
    lines = good.splitlines()
    lines = [lines[0] + ",note"] + [line + ",checked" for line in lines[1:]]
    runs.write_text("\n".join(lines) + "\n")
    ckpt(cfg, "B1B").unlink()
    run_study(cfg, splits, ds, runs, **QUIET)  # B1B trained again: a new row, a new note
    assert [r["note"] for r in read_runs(runs)] == ["checked", "checked", "", "checked"]
    # a spreadsheet's byte-order mark is not part of the first column
    runs.write_bytes(b"\xef\xbb\xbf" + runs.read_bytes())
    assert len(read_runs(runs)) == 4


def test_a_line_with_a_field_too_many_or_too_few_is_named(tmp_path):
    table = tmp_path / "runs.csv"
    write_runs(table, fake_rows(2))
    lines = table.read_text().splitlines()
    for line in (lines[1] + ",x", lines[1].rsplit(",", 2)[0]):
        table.write_text("\n".join([lines[0], line, lines[2]]) + "\n")
        with pytest.raises(
            TableError, match=rf"line 2: \d+ fields where the header has {len(COLUMNS)}"
        ):
            read_runs(table)


def test_a_write_never_shortens_a_table_it_was_not_told_to(tmp_path):
    table = tmp_path / "runs.csv"
    write_runs(table, fake_rows(3))
    with pytest.raises(TableError, match=r"would lose 1 row\(s\) \(random0/s0/net2\)"):
        write_runs(table, fake_rows(2))
    assert len(read_runs(table)) == 3
    write_runs(table, fake_rows(2), drop=["random0/s0/net2"])
    assert len(read_runs(table)) == 2


# ------------------------------------------------------------------ 9. README splice


def test_the_readme_splice_is_atomic_under_a_file_size_limit(tmp_path):
    readme = tmp_path / "README.md"
    text = "# x\n<!-- results:start -->\nold\n<!-- results:end -->\n" + "tail\n" * 3000
    readme.write_text(text)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "pipelines")!r})
        from report import splice_readme
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        try:
            splice_readme(Path({str(readme)!r}), "new\\n" * 10)
        except OSError as e:
            sys.exit(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert readme.read_text() == text
    assert not list(tmp_path.glob(".README.md.*"))


# ------------------------------------------------------------------ 10. sources that never end


def test_a_device_or_fifo_as_data_source_is_refused_not_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in ("/dev/zero", str(fifo)):
        with at_most(20), pytest.raises(data.DataError, match="not a regular file or folder"):
            data.prepare(source, tmp_path / "out.npz")
    folder = make_image_folder(tmp_path / "imgs", n_train=1, n_test=1)
    os.mkfifo(folder / "train" / "cat" / "9999.png")
    with at_most(20), pytest.raises(data.DataError, match=r"not a regular file: .*9999\.png"):
        data.prepare(str(folder), tmp_path / "out.npz")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(data.DataError, match="leads nowhere"):
        data.prepare(str(loop), tmp_path / "out.npz")


# ------------------------------------------------------------------ 11. Makefile


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_repro_keeps_a_data_path_with_a_space_whole(tmp_path):
    path = tmp_path / "dir with a space" / "cifar.tar.gz"
    line = make_repro_dry(f"DATA={path}")
    argv = shell_words(line[line.index("dvc exp run") + len("dvc ") :])
    assert f"data.source='{path}'" in argv and argv.count("-S") == 1, argv


# ------------------------------------------------------------------ 12. reproduce


def test_reproduce_reruns_with_the_thread_count_of_the_committed_row(
    tiny_study, tmp_path, monkeypatch
):
    from transferability.networks import Networks

    cfg, splits, ds = tiny_study
    cfg = small(cfg)  # train.threads=1
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, which="bases", **QUIET)
    assert {r["machine"] for r in read_runs(runs)} == {f"{processor()}; 1 threads"}
    threads, real = [], Networks.run

    def spy(self, job, base_md5=""):
        threads.append(torch.get_num_threads())
        return real(self, job, base_md5)

    monkeypatch.setattr(Networks, "run", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # OMP_NUM_THREADS, or another train.threads, says otherwise
    try:
        sample = ["random0/s0/baseB"]
        out = reproduce(
            with_(cfg, "train", threads=2), splits, ds, runs, sample, tmp_path / "re", 1.0, **QUIET
        )
        assert threads == [1] and out[0]["same_machine"]
        assert out[0]["verdict"] == "ok (identical)"
        assert torch.get_num_threads() == 2  # restored
        rows = read_runs(runs)
        for r in rows:
            r["machine"] = "another CPU; AVX2; torch 0.0; 1 threads"
        write_runs(runs, rows)
        out = reproduce(
            with_(cfg, "train", threads=2), splits, ds, runs, sample, tmp_path / "r2", 1.0, **QUIET
        )
        assert threads[-1] == 2 and not out[0]["same_machine"]
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ 14. leftovers


def test_temporary_files_of_a_killed_write_are_removed_and_ignored(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = small(cfg)
    runs = tmp_path / "runs.csv"
    run_study(cfg, splits, ds, runs, which="bases", **QUIET)
    left = [
        ckpt(cfg, "baseB").parent / ".baseB.pt.k2x9q.tmp",
        tmp_path / ".runs.csv.8fj2a.tmp",
    ]
    for p in left:
        p.write_bytes(b"half a file")
    msgs = []
    run_study(cfg, splits, ds, runs, which="bases", log=msgs.append)
    assert not any(p.exists() for p in left)
    assert any("removed 2 temporary file(s)" in m for m in msgs)
    # nor would git or DVC take one for part of an output
    for ignore in (ROOT / ".gitignore", ROOT / ".dvcignore"):
        assert ".*.tmp" in ignore.read_text().splitlines()
    if shutil.which("git") and (ROOT / ".git").exists():
        probe = "results/.runs.csv.8fj2a.tmp"
        assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", probe]).returncode == 0
    dvc = Path(sys.executable).parent / "dvc"
    if dvc.is_file() and (ROOT / ".dvc").is_dir():
        probe = "models/bases/random0/s0/.baseB.pt.k2x9q.tmp"
        done = subprocess.run([dvc, "check-ignore", probe], cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ 13. messages


def test_clear_messages_for_bad_settings(tmp_path):
    for bad, message in {
        "train.epochs=true": "--set: train.epochs: .*not true/false",
        "study.cuts=[9]": r"--set: study.cuts: \[9\] out of range",
        "split.random_seeds=[-1]": "--set: split.random_seeds.0: .*greater than or equal to 0",
    }.items():
        with pytest.raises(config.ConfigError, match=message):
            config.load(None, [bad])
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(config.ConfigError, match=r"'epochs' is given twice \(lines 2 and 3\)"):
        config.load(params)
    from transferability.train import resolve_device

    with pytest.raises(ValueError, match=r"train.device: 'tpu' is not a device") as err:
        resolve_device("tpu")
    assert "xla" not in str(err.value)


def test_a_tar_gz_named_zip_is_read_as_what_it_is(tmp_path):
    import tarfile

    folder = make_image_folder(tmp_path / "imgs", n_train=1, n_test=1)
    archive = tmp_path / "cifar.zip"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="imgs")
    ds = data.load(data.prepare(str(archive), tmp_path / "out.npz"))
    assert len(ds.train_x) == 10


def test_a_damaged_mlflow_store_is_named(tiny_study, tmp_path, monkeypatch):
    from transferability.networks import Networks, plan

    cfg, splits, ds = tiny_study
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(RuntimeError, match=r"MLflow store sqlite:///.*broken\.db cannot be used"):
        Tracker(cfg, Networks(cfg, splits, ds), plan(cfg, splits))


def test_a_full_disk_is_an_error_that_names_the_file(tiny_study, tmp_path, monkeypatch):
    cfg, splits, ds = tiny_study
    cfg = small(cfg)

    def full(*_, **__):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RuntimeError, match=r"baseA\.pt could not be written .*free space"):
        run_study(with_(cfg, "study", retries=0), splits, ds, tmp_path / "runs.csv", **QUIET)
    assert read_runs(tmp_path / "runs.csv") == []


def test_a_killed_worker_costs_a_retry_not_the_study(tiny_study, tmp_path):
    import multiprocessing
    import threading

    cfg, splits, ds = tiny_study
    data.save(ds, tmp_path / "dataset.npz")
    cfg = with_(small(cfg, workers=2, retries=2), "data", prepared=str(tmp_path / "dataset.npz"))
    killed = []

    def kill_a_worker():
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            for child in multiprocessing.active_children()[:1]:
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    rows = run_study(cfg, splits, ds, tmp_path / "runs.csv", **QUIET)
    killer.join()
    assert killed and len(rows) == 4


def test_an_os_error_is_a_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    import transferability.cli as cli_mod

    def full(cfg):
        raise OSError(28, "No space left on device", "results/runs.csv")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_mod, "_dataset", full)
    code, out = cli(monkeypatch, capsys, "train-bases")
    assert code == 2 and "No space left on device: 'results/runs.csv'" in out
    assert "Traceback" not in out
