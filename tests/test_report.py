"""The report stage: the notebook only draws and formats what the aggregate stage decided; on a
tiny study it writes every figure, table, macro and results.md, and the PDF compiles."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import papermill
import pytest

from tests.factories import diag_rows, make_runs, package_imports, pipeline_module, sweep_rows
from transferability.analysis import analyse, choose_budget
from transferability.config import AnalysisConfig
from transferability.runner import run_study, write_runs
from transferability.similarity import layer_similarity

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "report" / "report.ipynb"
FIGURES = ("fig_accuracy", "fig_gaps", "fig_control", "fig_paper")


def cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def write_pilot(results, val, classes=5, selffer_gain=0.001):
    """A synthetic convergence pilot: pilot.csv (two tasks × two seeds per budget, the seeds
    ±0.5 points apart, so the pooled seed SD is 0.71 points) and pilot_budgets.csv, as
    `transferability pilot` writes them; `val` maps (per_class, epochs) to validation accuracy."""
    rows = [
        {
            "split": "random0",
            "task": task,
            "seed": seed,
            "per_class": per_class,
            "epochs": epochs,
            "image_epochs": per_class * classes * epochs,
            "val_acc": acc + (0.005 if seed else -0.005),
            "selffer_val_acc": acc + selffer_gain,
            "selffer_gain": selffer_gain,
            "test_acc": None,  # the pilot may leave it out
            "seconds": 6.0,
            "recipe": "test",
            "machine": "test",
        }
        for (per_class, epochs), acc in val.items()
        for task in ("A", "B")
        for seed in (0, 1)
    ]
    pilot = pd.DataFrame(rows)
    pilot.to_csv(results / "pilot.csv", index=False)
    table, choice = choose_budget(pilot, AnalysisConfig().converged_max_gain)
    table.to_csv(results / "pilot_budgets.csv", index=False, float_format="%.4f")
    return results / "pilot_budgets.csv", choice


def build_report(work):
    out = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "report.py"), "results"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def execute_notebook(results_dir, out_dir, **parameters):
    """papermill runs the notebook as the report stage does, without TeX; returns out_dir."""
    papermill.execute_notebook(
        NOTEBOOK,
        Path(out_dir).with_suffix(".ipynb"),
        parameters={
            "results_dir": str(results_dir),
            "out_dir": str(out_dir),
            "reference_dir": str(ROOT / "report" / "reference"),
            "registration_path": str(ROOT / "report" / "registration.json"),
            **parameters,
        },
        kernel_name="python3",
        progress_bar=False,
    )
    return Path(out_dir)


STATISTICS = {"mean", "median", "sum", "min", "max", "std", "var", "sem", "quantile", "idxmax"}
STATISTICS |= {"idxmin", "agg", "aggregate", "cumsum", "corr", "cov", "ttest_1samp", "ttest_ind"}


def notebook_statistics(source: str) -> list[str]:
    """Calls in `source` that compute a statistic: a method or function named in STATISTICS
    (`x.mean()`, `max(values)`), or anything from scipy or statsmodels."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in STATISTICS:
                found.append(ast.unparse(node))
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
            found += [m for m in mods if m.split(".")[0] in ("scipy", "statsmodels")]
    return found


def test_the_notebook_computes_no_statistic():
    """Every statistic, extreme and flag comes from results/ (the analysis), never a cell: the
    notebook's code, parsed, calls nothing that computes one."""
    source = "\n".join("".join(c["source"]) for c in cells() if c["cell_type"] == "code")
    assert notebook_statistics(source) == []


def test_the_statistics_check_catches_what_it_should():
    assert notebook_statistics("x = runs.seconds.sum()\ny = max(values)") == [
        "runs.seconds.sum()",
        "max(values)",
    ]
    assert notebook_statistics("from scipy import stats") == ["scipy"]
    assert notebook_statistics("m = runs.test_acc.idxmax()") == ["runs.test_acc.idxmax()"]
    assert notebook_statistics("n = len(runs)") == []


def test_mlflow_gets_the_figures_and_summaries_of_the_sections_a_study_has(tmp_path):
    results, generated = tmp_path / "results", tmp_path / "generated"
    results.mkdir(), generated.mkdir()
    (generated / "fig_stitching.png").write_text("figure")
    (results / "diagnostics_summary.csv").write_text("diagnostic,variant\nstitching,trained\n")
    (results / "cka_summary.csv").write_text("comparison,layer\n")  # a header: CKA ran none
    names = {p.name for p in pipeline_module("report").study_artifacts(results, generated)}
    assert {"fig_stitching.png", "diagnostics_summary.csv", "fig_accuracy.png"} <= names
    assert not names & {"fig_stitching.pdf", "fig_cka.png", "cka_summary.csv", "datasize.csv"}


def test_each_study_drawn_beside_gets_its_numbers_on_its_own_parent_run(tmp_path, monkeypatch):
    from transferability import report

    stage, logged = pipeline_module("report"), []
    monkeypatch.setattr(report, "log_study_results", lambda d, files: logged.append((d, files)))
    results, beyond = tmp_path / "results", tmp_path / "results" / "beyond"
    beyond.mkdir(parents=True)
    (beyond / "diagnostics_summary.csv").write_text("diagnostic,variant\nstitching,trained\n")
    stage.log_results(results, [{"name": "beyond", "results_dir": str(beyond)}])
    assert [d for d, _ in logged] == [results, beyond]
    assert logged[0][1] == stage.study_artifacts(results, stage.GENERATED)
    assert [p.name for p in logged[1][1]] == [
        "claims.csv",
        "table1.csv",
        "metrics.json",
        "diagnostics_summary.csv",
        "paper.pdf",  # the report that draws it
    ]


def test_the_notebook_takes_every_parameter_the_report_stage_passes(tmp_path, monkeypatch):
    """papermill reads the notebook's parameters cell; the report stage passes exactly those
    (a name it passes that the cell lacks would be injected and silently ignored)."""
    import papermill

    stage = pipeline_module("report")
    passed = {}

    class Stop(Exception):
        pass

    def execute_notebook(source, target, parameters, **kw):
        passed.update(parameters)
        raise Stop

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Stop):
        stage.main("results")
    assert set(passed) == set(papermill.inspect_notebook(NOTEBOOK))


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="needs TeX (latexmk)")
def test_report_stage_builds_every_figure_and_the_pdf(tiny_study, tmp_path):
    """The tiny study without a convergence pilot (as the quick profile), then with one."""
    cfg, splits, ds = tiny_study
    # the top cut is studied: the claims compare spec(top) with spec(1)
    cfg = cfg.model_copy(
        update={
            "study": cfg.study.model_copy(update={"cuts": [1, 4]}),
            "beyond": cfg.beyond.model_copy(
                update={"datasize_per_class": [4], "datasize_cuts": [1], "cka_images": 20}
            ),
        }
    )
    work = tmp_path / "work"
    shutil.copytree(
        ROOT / "report", work / "report", ignore=shutil.ignore_patterns("build", "generated")
    )
    run_study(cfg, splits, ds, work / "results" / "runs.csv", log=lambda *_: None)
    analyse(work / "results" / "runs.csv", work / "results", num_layers=5, rules=AnalysisConfig())
    build_report(work)
    gen = work / "report" / "generated"
    for fig in FIGURES:
        assert (gen / f"{fig}.pdf").stat().st_size > 1000 and (gen / f"{fig}.png").is_file()
    for table in ("table_accuracy_random", "table_gaps_random", "table_table1", "table_claims"):
        assert "\\toprule" in (gen / f"{table}.tex").read_text()
    assert not (gen / "table_gaps_dissimilar.tex").exists()  # no dissimilar split in the study

    # one block: every claim is "not testable", and the paper says it is a demo profile
    claims = pd.read_csv(work / "results" / "claims.csv")
    table = (gen / "table_claims.tex").read_text()
    assert (claims.verdict == "not testable").all()
    assert table.count("not testable") >= len(claims)
    numbers = (gen / "numbers.tex").read_text()
    for macro in (
        "\\newcommand{\\NumNetworks}{22}",
        "\\newcommand{\\NumBlocksRandom}{1}",
        "\\newcommand{\\NumBlocksDissimilar}{0}",
        "\\newcommand{\\Epochs}{1}",
        "\\newcommand{\\CutList}{1, 4}",
        "\\newcommand{\\ClaimSpecificityGrowsVerdict}{not testable}",
        "\\newcommand{\\ClaimSpecificityGrowsInterval}{---}",
        "\\DemoProfiletrue",
        "\\PilotRunfalse",  # no pilot: the appendix says so, and the regime is unknown
        "\\StudyConvergenceKnownfalse",
        "\\StudyConvergedfalse",
        "\\newcommand{\\StudyEpochs}{1}",
        "\\HasDatasizefalse",  # beyond the paper: not run yet, and the PDF says so
        "\\HasCkafalse",
        "\\newcommand{\\ClaimBoostShrinksWithDataVerdict}{not testable}",
    ):
        assert macro in numbers, macro
    assert not (gen / "fig_pilot.pdf").exists() and not (gen / "table_pilot.tex").exists()
    for macro in ("BaseAccMean", "BaseAccMin", "BaseAccMax", "TrainImages", "TestImages"):
        assert f"\\newcommand{{\\{macro}}}" in numbers, macro

    results_md = (gen / "results.md").read_text()
    assert results_md.startswith("<!-- generated by") and "demo profile" in results_md
    assert results_md.count("not testable") >= len(claims)
    assert results_md.rstrip().splitlines()[-1].endswith("`dvc repro`")

    assert (work / "report" / "build" / "report.ipynb").is_file()  # the executed notebook
    assert (work / "report" / "build" / "paper.pdf").stat().st_size > 10000
    aux = (work / "report" / "build" / "paper.aux").read_text()
    assert "{app:pilot}" in aux and "{tab:pilot}" not in aux

    # with the pilot: the study's budget (1 epoch) gains 10 points from doubling, not
    # converged; twice as long converges and is the pilot's choice
    budget = json.loads((work / "results" / "summary.json").read_text())["budget"]
    per_class, half = budget["per_class"], budget["per_class"] // 2
    val = {(per_class, 1): 0.70, (per_class, 2): 0.80, (per_class, 4): 0.802}
    val |= {(half, 2): 0.68, (half, 4): 0.70}
    pilot_path, choice = write_pilot(work / "results", val)
    assert choice["chosen"] == (per_class, 2)
    # and beyond the paper: the target-size sweep and the layer similarities
    sweep = work / "results" / "runs_datasize.csv"
    run_study(cfg, splits, ds, sweep, which="datasize", log=lambda *_: None)
    layer_similarity(cfg, splits, ds, log=lambda *_: None).to_csv(work / "results" / "cka.csv")
    analyse(
        work / "results" / "runs.csv",
        work / "results",
        num_layers=5,
        rules=AnalysisConfig(),
        pilot_path=pilot_path,
        sweep_path=sweep,
        cka_path=work / "results" / "cka.csv",
    )
    build_report(work)
    for fig in ("fig_datasize", "fig_cka"):
        assert (gen / f"{fig}.pdf").stat().st_size > 1000 and (gen / f"{fig}.png").is_file()
    assert "\\toprule" in (gen / "table_datasize.tex").read_text()
    assert (gen / "fig_pilot.pdf").stat().st_size > 1000 and (gen / "fig_pilot.png").is_file()
    table = (gen / "table_pilot.tex").read_text()
    assert "\\toprule" in table and table.count("\\\\") == len(val) + 1  # header + budgets
    assert "yes, chosen" in table and "---" in table  # the longest budgets: no doubling measured
    numbers = (gen / "numbers.tex").read_text()
    for macro in (
        "\\PilotRuntrue",
        "\\PilotChoseBudgettrue",
        "\\StudyConvergenceKnowntrue",
        "\\StudyConvergedfalse",
        "\\newcommand{\\PilotSeedSD}{0.71}",
        f"\\newcommand{{\\PilotChosen}}{{{per_class} images per class $\\times$ 2 epochs}}",
        f"\\newcommand{{\\StudyPerClass}}{{{per_class}}}",
        "\\newcommand{\\PilotNumBudgets}{5}",
        "\\newcommand{\\PilotSplit}{random split 0}",
        "\\HasDatasizetrue",
        "\\HasCkatrue",
        f"\\newcommand{{\\DatasizeSizes}}{{4, {per_class}}}",
        "\\newcommand{\\CkaImages}{20}",
    ):
        assert macro in numbers, macro
    aux = (work / "report" / "build" / "paper.aux").read_text()
    assert "{tab:pilot}" in aux and "{fig:pilot}" in aux
    assert "{fig:datasize}" in aux and "{fig:cka}" in aux and "{tab:datasize}" in aux


def test_the_notebook_formats_the_intervals_and_verdicts_of_a_full_study(tmp_path):
    """Five random blocks and three dissimilar ones: intervals and verdicts, as written by the
    aggregate stage, reach the tables, the macros and results.md (papermill only, no TeX)."""

    def rnd(b, t, tr, n):
        spread = 0.001 * (b % 3) * n  # the blocks differ a little, so that there is a spread
        return {"base": 0.80, "AnB": 0.80 - 0.005 * n * n - spread, "RnB": 0.5}.get(
            tr, 0.80
        ) + 0.002 * b

    def dis(b, t, tr, n):
        return {"base": 0.85, "AnB": 0.85 - 0.02 * n * n, "RnB": 0.5}.get(tr, 0.85) + 0.003 * b

    runs = pd.concat([make_runs(5, rnd), make_runs(3, dis, "dissimilar", classes=5)])
    runs = runs.assign(
        arch="cifar5",
        epochs=30,
        train_images=22500,
        val_images=2500,
        test_images=5000,
        val_acc=runs.test_acc,
        seconds=60.0,
        machine="test",
    )
    results = tmp_path / "results"
    results.mkdir()
    write_runs(results / "runs.csv", runs.to_dict("records"))
    # the pilot: the study's budget (4,500 images per class, 30 epochs) is its choice
    pilot_path, _ = write_pilot(results, {(4500, 15): 0.75, (4500, 30): 0.80, (4500, 60): 0.801})
    _, sweep = sweep_rows(5, lambda b, size: {25: 0.05 + 0.01 * b}.get(size, 0.0), (25, 100))
    sweep.assign(arch="cifar5", epochs=30).to_csv(results / "runs_datasize.csv", index=False)
    diag_rows().to_csv(tmp_path / "diagnostics.csv", index=False)  # the four, 5 blocks
    analyse(
        results / "runs.csv",
        results,
        num_layers=5,
        rules=AnalysisConfig(),
        pilot_path=pilot_path,
        sweep_path=results / "runs_datasize.csv",
        diagnostics_path=tmp_path / "diagnostics.csv",
    )
    gen = execute_notebook(results, tmp_path / "generated")
    claims = pd.read_csv(results / "claims.csv", keep_default_na=False).set_index("claim")
    assert claims.loc["specificity_grows", "verdict"] == "reproduced"
    numbers = (gen / "numbers.tex").read_text()
    assert "\\DemoProfilefalse" in numbers and "\\HasDissimilartrue" in numbers
    assert "\\newcommand{\\NumBlocksRandom}{5}" in numbers
    assert "\\newcommand{\\ClaimSpecificityGrowsVerdict}{reproduced}" in numbers
    assert "\\newcommand{\\ClaimBoostShrinksWithDataVerdict}{supported}" in numbers
    assert "\\HasDatasizetrue" in numbers and "\\HasCkafalse" in numbers
    assert "\\HasDiagnosticstrue" in numbers and "\\newcommand{\\DiagnosticsBlocks}{5}" in numbers
    assert "\\newcommand{\\ClaimReuseBeatsScaleVerdict}{supported}" in numbers
    assert (gen / "fig_stitching.png").is_file() and (gen / "fig_diagnostics.png").is_file()
    assert "\\StudyConvergedtrue" in numbers and "\\StudyConvergenceKnowntrue" in numbers
    assert "\\newcommand{\\PilotChosen}{4,500 images per class $\\times$ 30 epochs}" in numbers
    assert (gen / "fig_pilot.png").is_file()
    assert "yes, chosen" in (gen / "table_pilot.tex").read_text()
    for kind in ("random", "dissimilar"):
        assert "$\\pm$ ---" not in (gen / f"table_gaps_{kind}.tex").read_text()  # intervals
    table = (gen / "table_claims.tex").read_text()
    for claim, row in claims.iterrows():
        assert row["verdict"] in table, claim
    results_md = (gen / "results.md").read_text()
    assert "demo profile" not in results_md
    assert f"{float(claims.loc['specificity_grows', 'estimate']):+.2f} |" in results_md


def synthetic_study(folder, per_class, epochs, coadaptation, diagnostics=False):
    """Five random blocks at `per_class` images per class and `epochs`, baseB − BnB =
    `coadaptation` (+0.001 per block) at every cut, a target-size sweep (25 and 100 images per
    class), the four diagnostics if asked, analysed as the aggregate stage does."""

    def acc(b, t, tr, n):
        return {"BnB": 0.8 - coadaptation - 0.001 * b, "AnB": 0.78 - 0.005 * n * n}.get(
            tr, 0.8
        ) + 0.002 * b

    runs = make_runs(5, acc)
    runs = runs.assign(
        arch="cifar5",
        epochs=epochs,
        train_images=5 * per_class,
        val_images=2500,
        test_images=5000,
        val_acc=runs.test_acc,
        seconds=60.0,
        machine=f"machine of {folder.name}",
        fingerprint=runs.network + f" at {per_class}",
    )
    folder.mkdir(parents=True)
    write_runs(folder / "runs.csv", runs.to_dict("records"))
    _, sweep = sweep_rows(5, lambda b, size: 0.01 * b + 1 / size, (25, 100), per_class)
    sweep.assign(arch="cifar5", epochs=epochs).to_csv(folder / "runs_datasize.csv", index=False)
    extra = {"sweep_path": folder / "runs_datasize.csv"}
    if diagnostics:
        diag_rows().to_csv(folder / "diagnostics.csv", index=False)
        extra["diagnostics_path"] = folder / "diagnostics.csv"
    analyse(folder / "runs.csv", folder, num_layers=5, rules=AnalysisConfig(), **extra)
    return {"name": folder.name, "results_dir": str(folder)}


def test_the_studies_beside_this_one_are_drawn_side_by_side_and_lend_their_diagnostics(tmp_path):
    """report.beside: a study at another task size is drawn side by side (the paper's figure,
    Table 1, the claims, the size axis), the largest task first; a study in this study's regime
    lends only its diagnostics, which this study ran none of, with their statements."""
    lead = synthetic_study(tmp_path / "results", 250, 80, coadaptation=0.002)
    # the whole-task study runs the diagnostics too: another regime's, never lent
    whole = synthetic_study(tmp_path / "whole", 4500, 40, coadaptation=0.02, diagnostics=True)
    beyond = synthetic_study(tmp_path / "beyond", 250, 80, coadaptation=0.002, diagnostics=True)
    gen = execute_notebook(lead["results_dir"], tmp_path / "generated", beside=[whole, beyond])
    for fig in ("fig_beside", "fig_size_axis", "fig_stitching", "fig_diagnostics"):
        assert (gen / f"{fig}.pdf").stat().st_size > 1000, fig
    numbers = (gen / "numbers.tex").read_text()
    for macro in (
        "\\HasBesidetrue",
        "\\newcommand{\\BesideStudies}{whole}",  # beyond is in this study's regime
        "\\DiagnosticsBesidetrue",
        "\\HasDiagnosticstrue",
        "\\newcommand{\\DiagnosticsStudy}{beyond}",
        "\\newcommand{\\DiagnosticsBlocks}{5}",
        "\\newcommand{\\DiagnosticsMachines}{machine of beyond}",
        "\\newcommand{\\ClaimReuseBeatsScaleVerdict}{supported}",  # beyond's statement
    ):
        assert macro in numbers, macro
    # beyond's networks are this study's by fingerprint (the same settings, data and seeds)
    assert "\\newcommand{\\DiagnosticsSameNetworks}{210}" in numbers
    assert "\\newcommand{\\DiagnosticsNetworks}{210}" in numbers
    claims = (gen / "table_beside_claims.tex").read_text()
    head = claims.split("\\midrule")[0]
    assert head.index("whole (4,500/class)") < head.index("this study (250/class)")
    # each study's estimate in its own column: the co-adaptation row, whole's first
    row = next(ln for ln in claims.splitlines() if ln.startswith("fragile co-adaptation"))
    estimates = [
        f"{pd.read_csv(d / 'claims.csv').set_index('claim').estimate['coadaptation_middle']:+.2f}"
        for d in (tmp_path / "whole", tmp_path / "results")
    ]
    assert estimates[0] != estimates[1]
    assert 0 <= row.index(estimates[0]) < row.index(estimates[1])
    # the lent statements say where they were decided
    lent = (gen / "table_claims.tex").read_text()
    assert lent.count("Decided on the beyond study's 5 blocks") == 4
    table1 = (gen / "table_beside_table1.tex").read_text()
    rows = table1.split("\\midrule")[1]
    assert rows.index("whole (4,500/class)") < rows.index("this study (250/class)")
    assert rows.index("this study (250/class)") < rows.index("the paper (ImageNet)")
    results_md = (gen / "results.md").read_text()
    assert results_md.index("### The studies side by side") < results_md.index("### Base")
    if shutil.which("latexmk"):  # the section typesets (CI has TeX)
        shutil.copy(ROOT / "report" / "paper.tex", tmp_path / "paper.tex")
        latex = subprocess.run(
            ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert latex.returncode == 0, latex.stdout[-3000:]
        aux = (tmp_path / "paper.aux").read_text()
        assert "{sec:beside}" in aux and "{fig:sizeaxis}" in aux and "{tab:besideclaims}" in aux

    # without a study beside it: no side-by-side section, and no diagnostics
    gen2 = execute_notebook(lead["results_dir"], tmp_path / "alone")
    numbers = (gen2 / "numbers.tex").read_text()
    assert "\\HasBesidefalse" in numbers and "\\HasDiagnosticsfalse" in numbers
    assert (
        not (gen2 / "fig_beside.pdf").exists() and not (gen2 / "table_beside_claims.tex").exists()
    )


def test_report_beside_names_a_study_that_is_not_there(tmp_path, monkeypatch):
    report = pipeline_module("report")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("report:\n  beside: [whole]\n")
    with pytest.raises(SystemExit, match=r"report.beside: whole: pipelines/whole/params.yaml"):
        report.beside_studies()
    (tmp_path / "pipelines/whole").mkdir(parents=True)
    (tmp_path / "pipelines/whole/params.yaml").write_text("study:\n  results_dir: results/whole\n")
    with pytest.raises(SystemExit, match=r"results/whole/claims.csv not found"):
        report.beside_studies()
    (tmp_path / "results/whole").mkdir(parents=True)
    (tmp_path / "results/whole/claims.csv").write_text("claim\n")
    assert report.beside_studies() == [{"name": "whole", "results_dir": "results/whole"}]


def test_the_report_stage_depends_on_every_module_the_notebook_imports():
    import json

    import yaml

    nb = json.loads((ROOT / "report" / "report.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    modules = package_imports(code)
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    assert {f"src/transferability/{m}.py" for m in modules} <= set(deps)


def test_the_report_stage_depends_on_each_study_beside_through_its_dvc_lock():
    """A study of report.beside is a dependency through its dvc.lock, not its results: the
    report reruns when that study's results change, and `dvc repro` never reruns that study."""
    import yaml

    from transferability import config

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    beside = config.load(ROOT / "params.yaml").report.beside
    locks = {d for d in stage["deps"] if d.endswith("/dvc.lock")}
    assert locks == {f"pipelines/{name}/dvc.lock" for name in beside}
    assert "report" in stage["params"]
