"""``python -m analysis.report --experiment NAME``: MLflow runs -> the paper's tables and figures.

Writes into ``reports/<experiment>/`` (or ``--out``): Tables 1-5 in the paper's layouts as LaTeX
(booktabs, best mean in bold, caption, label) and Markdown, the lambda table and figure, per-class bar
charts, summed confusion matrices, and on the synthetic set the attention-vs-truth table and figure.
Which tables appear depends on the studies found among the runs (tag ``study``).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from vaanet.losses import DATASET_CLASSES

from . import figures
from .runs import load_runs
from .tables import (ABLATION_ORDER, Table, ablation_table, attention_truth_table, lambda_table, loss_table,
                     main_table, to_latex, to_markdown)


def build_tables(runs) -> list[Table]:
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
        if study == "lambda_sweep":
            tables.append(lambda_table(part))
    synth = runs[runs["dataset"] == "synth"]
    if len(synth):
        t = attention_truth_table(synth)
        if t is not None:
            tables.append(t)
    return tables


def write_reports(experiment: str | list[str], uri: str | None = None, out: str | Path | None = None,
                  formats=("latex", "md"), compare_paper: bool = True, log=print) -> list[Path]:
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    out = Path(out or Path("reports") / names[0])
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(names, uri)
    if runs.empty:
        raise ValueError(f"experiment(s) {names} hold no runs")
    written = []
    runs.to_csv(out / "runs.csv", index=False)
    tables = build_tables(runs)
    for table in tables:
        if "latex" in formats:
            (out / f"{table.name}.tex").write_text(to_latex(table, compare_paper))
            written.append(out / f"{table.name}.tex")
        if "md" in formats:
            (out / f"{table.name}.md").write_text(to_markdown(table, compare_paper))
            written.append(out / f"{table.name}.md")
        gone = [f"{r['label']}: {', '.join(r['missing'])}" for r in table.rows if r["missing"]]
        if gone:
            msg = f"{table.name}: missing runs (failed or never ran) - " + "; ".join(gone)
            warnings.warn(msg, stacklevel=2)
            log(f"WARNING: {msg}")
    ok = runs[runs["status"] == "FINISHED"]
    if "lambda_sweep" in set(runs["study"]) and len(ok):
        written.append(figures.lambda_figure(runs[runs["study"] == "lambda_sweep"], out / "lambda.png"))
    for dataset, part in runs[runs["study"] == "ablation"].groupby("dataset"):
        classes = list(DATASET_CLASSES["e6" if dataset == "e6" else "ve8"])
        written.append(figures.per_class_figure(part, classes, ABLATION_ORDER, out / f"per_class_{dataset}.png"))
    if len(ok):
        written += figures.confusion_figures(runs, uri, out)
    synth = runs[runs["dataset"] == "synth"]
    if len(synth):
        p = figures.attention_truth_figure(synth, ABLATION_ORDER + ["V", "V+A"], out / "attention_vs_truth.png")
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
    p.add_argument("--format", default="latex,md", help="comma-separated: latex, md")
    p.add_argument("--no-paper", action="store_true", help="do not print the difference to the paper's numbers")
    a = p.parse_args(argv)
    formats = tuple(f.strip() for f in a.format.split(","))
    bad = set(formats) - {"latex", "md"}
    if bad:
        p.error(f"unknown formats {sorted(bad)}; use latex and/or md")
    try:
        write_reports(a.experiment, a.mlflow_uri, a.out, formats, compare_paper=not a.no_paper)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
