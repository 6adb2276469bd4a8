"""``python -m analysis.report --experiment NAME``: MLflow runs -> the paper's tables and figures.

Prints the tables (Markdown) and writes into ``reports/<experiment>/`` (or ``--out``): Tables 1-5 in the
paper's layouts as LaTeX (booktabs, best mean in bold, caption, label; sized to fit a one-column article
and a two-column page, wide ones as ``table*``) and Markdown, the lambda table and figure, per-class bar
charts, summed confusion matrices, and on the synthetic set the attention-vs-truth table and figure.
Beside each table, ``<table>_stats.csv`` (vaanet.stats: every cell's interval and every comparison's
difference, p values, effect size and resolution, in percent points) and ``statistics.md``, a paragraph for
a paper's experimental section. Which tables appear depends on the studies found among the runs (tag ``study``). An experiment that does
not exist is an error that writes nothing (no empty tracking database, no folders).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # before mlflow is imported

from vaanet.classes import DATASET_CLASSES  # noqa: E402
from vaanet.train.store import default_tracking_uri  # noqa: E402

from vaanet import stats  # noqa: E402

from . import figures  # noqa: E402
from .runs import load_runs  # noqa: E402
from .render import to_latex, to_markdown  # noqa: E402
from .tables import (ABLATION_ORDER, Table, ablation_table, attention_truth_table, lambda_table,  # noqa: E402
                     loss_table, main_table)

TABLE_FORMATS, FIGURE_FORMATS = ("latex", "md"), ("png", "pdf", "svg")


def check_store(uri: str, names: list[str]) -> None:
    """A local tracking store (SQLite file or folder) must exist: opening a missing one would create it."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri.split(":///", 1)[1]) if ":///" in uri else None
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path)
    else:
        return
    if path is not None and not path.exists():
        raise ValueError(f"no MLflow experiment named {names} at {uri}: the tracking store {path} does not exist "
                         "(no experiments)")


def build_tables(runs) -> list[Table]:
    """The paper's tables from one run per trial (``runs.load_runs``). A study's trials on one data set come
    from one MLflow experiment: two experiments of the same study (another lr, say) are never pooled into
    one cell, which would double n, widen the std and pair each split twice in the t-tests."""
    if "mlflow_experiment" in runs and len(runs):
        spans = runs.groupby(["study", "dataset"])["mlflow_experiment"].unique()
        mixed = {key: sorted(v) for key, v in spans.items() if len(v) > 1}
        if mixed:
            (study, dataset), names = next(iter(mixed.items()))
            raise ValueError(f"the {study} study on {dataset} has trials in {len(names)} experiments "
                             f"({', '.join(names)}): a table holds one experiment's trials; report them one "
                             "experiment at a time")
    tables = []
    for study, part in runs.groupby("study"):
        for dataset, sub in part.groupby("dataset"):
            classes = list(DATASET_CLASSES["e6" if dataset == "e6" else "ve8"])
            if study == "ablation":
                tables.append(ablation_table(sub, dataset, classes))
            elif study == "main_comparison":
                tables.append(main_table(sub, dataset))
        if study == "loss_comparison":
            tables.append(loss_table(part))
        if study == "lambda_sweep":  # one table per data set: lambdas of VE-8 and E-6 are never pooled
            for dataset, sub in part.groupby("dataset"):
                tables.append(lambda_table(sub, dataset if part["dataset"].nunique() > 1 else None))
    # the attention-vs-truth table compares the ablation's presets; the loss comparison's and the lambda sweep's
    # synthetic runs (other losses, other lambdas under one preset) are not pooled into its rows
    synth = runs[(runs["dataset"] == "synth") & (runs["study"] == "ablation")]
    if len(synth):
        t = attention_truth_table(synth)
        if t is not None:
            tables.append(t)
    return tables


def write_reports(experiment: str | list[str], uri: str | None = None, out: str | Path | None = None,
                  formats=TABLE_FORMATS, compare_paper: bool = True, log=print, figure_format: str = "png",
                  std: str = "row", parent: str | None = None, all_studies: bool = False) -> list[Path]:
    """Print the tables and write tables and figures; ``std``: row | inline | none (see ``render.to_latex``);
    ``parent``/``all_studies``: which study's trials (see ``runs.load_runs``)."""
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    uri = uri or default_tracking_uri()
    check_store(uri, names)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(names, uri, parent, all_studies)
    for w in caught:
        log(f"WARNING: {w.message}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if runs.empty:
        raise ValueError(f"experiment(s) {names} hold no runs")
    tables = build_tables(runs)  # a refused mix of experiments writes nothing
    out = Path(out or Path("reports") / names[0])
    out.mkdir(parents=True, exist_ok=True)
    written, ext = [], figure_format
    runs.to_csv(out / "runs.csv", index=False)
    for table in tables:
        log(to_markdown(table, compare_paper))
        if "latex" in formats:
            (out / f"{table.name}.tex").write_text(to_latex(table, compare_paper, std))
            written.append(out / f"{table.name}.tex")
        if "md" in formats:
            (out / f"{table.name}.md").write_text(to_markdown(table, compare_paper))
            written.append(out / f"{table.name}.md")
        if table.stats is not None:  # every cell and comparison of the table, in percent points
            written.append(stats.write_csv(table.stats, out / f"{table.name}_stats.csv"))
        gone = [f"{r['label']}: {', '.join(r['missing'])}" for r in table.rows if r["missing"]]
        if gone:
            msg = f"{table.name}: missing runs (failed or never ran) - " + "; ".join(gone)
            warnings.warn(msg, stacklevel=2)
            log(f"WARNING: {msg}")
    text = stats.paragraph([t.stats for t in tables if t.stats is not None])
    (out / "statistics.md").write_text(text)  # to paste into a paper's experimental section
    written.append(out / "statistics.md")
    log(text)
    ok = runs[runs["status"] == "FINISHED"]
    sweep = ok[ok["study"] == "lambda_sweep"]
    for dataset, part in sweep.groupby("dataset"):  # one figure per data set, like the table
        name = f"lambda_{dataset}" if sweep["dataset"].nunique() > 1 else "lambda"
        written.append(figures.lambda_figure(part, out / f"{name}.{ext}"))
    for dataset, part in runs[runs["study"] == "ablation"].groupby("dataset"):
        classes = list(DATASET_CLASSES["e6" if dataset == "e6" else "ve8"])
        written.append(figures.per_class_figure(part, classes, ABLATION_ORDER, out / f"per_class_{dataset}.{ext}"))
    if len(ok):
        written += figures.confusion_figures(runs, uri, out, ext, ABLATION_ORDER + ["V", "V+A"])
    synth = runs[(runs["dataset"] == "synth") & (runs["study"] == "ablation")]  # as the table
    if len(synth):
        p = figures.attention_truth_figure(synth, ABLATION_ORDER + ["V", "V+A"], out / f"attention_vs_truth.{ext}")
        if p:
            written.append(p)
    log(f"wrote {len(written)} report files to {out}")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", action="append", required=True,
                   help="MLflow experiment (repeatable: e.g. ablation-ve8 and ablation-e6 into one report)")
    p.add_argument("--mlflow-uri", default=None, help="tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--out", default=None, help="output folder (default reports/<first experiment>)")
    p.add_argument("--format", default="latex,md,png",
                   help="comma-separated table formats (latex, md; default both) and one figure format (png, pdf, svg; "
                        "default png), e.g. --format pdf")
    p.add_argument("--std", choices=("row", "inline", "none"), default="row",
                   help="LaTeX: std in a small row under the means, inline after each mean, or mean only")
    p.add_argument("--no-paper", action="store_true", help="do not print the difference to the paper's numbers")
    p.add_argument("--all-studies", action="store_true", help="pool the trials of every run of a study in the "
                   "experiment (default: the latest study run's only, with a warning naming what was left out)")
    a = p.parse_args(argv)
    formats = [f.strip() for f in a.format.split(",") if f.strip()]
    bad = set(formats) - set(TABLE_FORMATS) - set(FIGURE_FORMATS)
    if bad:
        p.error(f"unknown formats {sorted(bad)}; use {', '.join(TABLE_FORMATS + FIGURE_FORMATS)}")
    figure_formats = [f for f in formats if f in FIGURE_FORMATS]
    if len(figure_formats) > 1:
        p.error(f"one figure format, not {figure_formats}")
    tables = tuple(f for f in formats if f in TABLE_FORMATS) or TABLE_FORMATS
    try:
        write_reports(a.experiment, a.mlflow_uri, a.out, tables, compare_paper=not a.no_paper,
                      figure_format=(figure_formats or ["png"])[0], std=a.std, all_studies=a.all_studies)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
