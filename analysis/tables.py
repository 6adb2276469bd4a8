"""Aggregation over splits and seeds, paired tests, and the paper's table layouts in LaTeX / Markdown.

Every cell is mean ± std (in %) over the finished runs of a row; ``n`` says how many. One run has no std:
its cell is the mean and "± –" (a table note says so), never "± 0.0". A grid point that failed or never
ran (a split/seed that other rows of the same study have) is listed in ``missing`` and flagged in the
table, never silently averaged away. Bold marks the best mean as printed (ties all bold) among the rows
with the column's full n; a row with fewer finished runs does not compete (a table note says so).

Each table names its comparisons (Tables 3/4: each row against the row above and against the full model;
Table 5: PCCE against CE per preset and data set; the lambda sweep: each lambda against lambda = 0). Their
statistics (:mod:`vaanet.stats`: paired difference with its interval, Holm-corrected p, effect size,
resolution) are in ``Table.stats``; a Δ column prints the difference, † where it is significant after
correction, and the interval where the page allows; one line under the table says what the study resolves.
This module builds the tables (:class:`Table`, one function per paper table); :mod:`analysis.render` prints
them as Markdown and LaTeX.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from vaanet import stats

from . import paper


@dataclass
class Table:
    name: str  # file stem, e.g. "table3"
    caption: str
    columns: list[str]
    rows: list[dict]  # {"label": str | tuple, "cells": {col: (mean, std, n) | float | str}, "paper": {col: float}}
    bold_columns: list[str] = field(default_factory=list)  # best mean in bold
    notes: list[str] = field(default_factory=list)
    label_header: tuple[str, ...] = ("",)
    latex_headers: dict[str, str] = field(default_factory=dict)  # compact LaTeX header per column (default: its name)
    wide: bool = False  # too wide for one column of a two-column page: LaTeX ``table*``
    # the n column(s): header -> the columns whose n it shows (default: one "n" over every column). A row's
    # "missing" lists every missing point; with several n columns, its "missing_by" gives each header its own
    n_columns: dict[str, list[str]] = field(default_factory=dict)
    n_latex_headers: dict[str, str] = field(default_factory=dict)
    stats: pd.DataFrame | None = None  # vaanet.stats' frame: one row per cell and per comparison
    ci_columns: list[str] = field(default_factory=list)  # cells printed with their 95 % interval (Markdown)
    markdown_only: list[str] = field(default_factory=list)  # columns a one-column page has no room for in LaTeX
    latex_notes: list[str] = field(default_factory=list)  # notes on what only LaTeX shows (its abbreviated headers)


@dataclass(frozen=True)
class Delta:
    """A Δ cell: the comparison of ``row`` against ``ref`` in ``column`` (its numbers are in ``Table.stats``)."""
    row: str
    ref: str
    column: str


def summarize(values) -> tuple[float, float, int]:
    """(mean, sample std, n) in %; the std is NaN (undefined) for one value, as both are for none."""
    d = stats.describe(stats.percent([x for x in values if x is not None and np.isfinite(x)]))
    return (d["mean"], d["std"], d["n"])


def label_text(label) -> str:
    """A row's name in the stats file: Table 5's ("VS+VCW+VT", "PCCE") is "VS+VCW+VT / PCCE"."""
    return " / ".join(label) if isinstance(label, tuple) else str(label)


class Collector:
    """A table's samples (one per cell, by row and column) and comparisons, gathered while its rows are built;
    :meth:`frame` turns them into the table's statistics."""

    def __init__(self, name: str):
        self.name, self.samples, self.comparisons = name, {}, []

    def cell(self, label, column: str, part: pd.DataFrame, metric: str) -> tuple[float, float, int]:
        """Keep the cell's sample; return its (mean, std, n) as the table prints it."""
        s = stats.sample(part, metric)
        self.samples[(label_text(label), column)] = (metric, s)
        d = stats.describe(s.to_numpy())
        return (d["mean"], d["std"], d["n"])

    def compare(self, label, ref, column: str) -> Delta:
        self.comparisons.append((label_text(label), label_text(ref), column))
        return Delta(label_text(label), label_text(ref), column)

    def frame(self) -> pd.DataFrame:
        rows = [stats.cell_rows(self.name, r, c, m, s) for (r, c), (m, s) in self.samples.items()]
        for r, ref, c in self.comparisons:
            metric, a = self.samples[(r, c)]
            rows.append(stats.comparison_row(self.name, r, ref, c, metric, a, self.samples[(ref, c)][1]))
        return stats.finish(rows)


def missing_points(runs: pd.DataFrame, group: str) -> dict[str, list[str]]:
    """For each value of ``group``: the (split, seed) points other groups finished but it did not."""
    ok = runs[runs["status"] == "FINISHED"]
    points = set(zip(ok["split"], ok["seed"])) | set(zip(runs["split"], runs["seed"]))
    out = {}
    for key, part in runs.groupby(group, sort=False):
        done = set(zip(part.loc[part["status"] == "FINISHED", "split"], part.loc[part["status"] == "FINISHED", "seed"]))
        gone = sorted(points - done, key=str)
        if gone:
            out[str(key)] = [f"{s}/seed {int(d) if d == d else d}" for s, d in gone]
    return out


def abbreviate(name: str) -> str:
    """A class name for a narrow header: up to four letters as is, else its first three and a dot."""
    return name if len(name) <= 4 else name[:3] + "."


def stack(*lines: str) -> str:
    """A header of several centred lines in one LaTeX cell (no package needed)."""
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\".join(lines) + r"\end{tabular}"


# ---- the paper's tables --------------------------------------------------------------------------
ABLATION_ORDER = ["AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT"]


def ablation_table(runs: pd.DataFrame, dataset: str, classes: list[str]) -> Table:
    """Tables 3/4: per-class and overall accuracy per attention preset; each row compared with the row above
    (the paper's story) and with the full model (the last row), on accuracy and mean class accuracy."""
    runs = runs[runs["dataset"] == dataset]
    ok = runs[runs["status"] == "FINISHED"]
    number = {"ve8": "3", "e6": "4"}.get(dataset, "3")
    name = f"table{number}_{dataset}"
    paper_ds = dataset if dataset in paper.ABLATION else None
    cols = classes + ["Accuracy", "Mean class acc.", "Δ prev.", "Δ full"]
    metrics = {**{c: f"test_acc_{c}" for c in classes}, "Accuracy": "test_acc", "Mean class acc.": "test_mean_class_acc"}
    presets = [p for p in ABLATION_ORDER if p in set(runs["preset"])]
    full = presets[-1] if presets else None
    rows, got = [], Collector(name)
    missing = missing_points(runs, "preset")
    for i, preset in enumerate(presets):
        part = ok[ok["preset"] == preset]
        cells = {c: got.cell(preset, c, part, m) for c, m in metrics.items()}
        rows.append({"label": preset, "cells": cells, "missing": missing.get(preset, []),
                     "paper": {c: paper.ablation_number(paper_ds, preset, c) for c in classes + ["Accuracy"]}
                     if paper_ds else {}})
    for i, preset in enumerate(presets):  # the row above; the full model unless that is the row above
        for c in ("Accuracy", "Mean class acc."):
            delta = got.compare(preset, presets[i - 1], c) if i else None
            if c == "Accuracy":
                rows[i]["cells"]["Δ prev."] = delta
            if preset != full and presets[i + 1] != full:
                delta = got.compare(preset, full, c)
            elif preset != full:  # full vs this row is the full model's "row above": the same pair, reversed
                delta = Delta(preset, full, c)
            else:
                delta = None
            if c == "Accuracy":
                rows[i]["cells"]["Δ full"] = delta
    notes = ["Accuracy = overall top-1 accuracy over test videos (the paper's 'Average'); mean class acc. = mean of "
             "the per-class accuracies."]
    short = {c: abbreviate(c) for c in classes}
    abbreviations = ["Classes: " + ", ".join(f"{s} {c}" for c, s in short.items() if s != c) + "."]
    table = Table(name, f"Ablation of the attentions on {dataset.upper()} "
                  f"(Table {number} layout): test accuracy in %, mean ± std over splits", cols, rows,
                  bold_columns=classes + ["Accuracy", "Mean class acc."], notes=notes, label_header=("Attentions",),
                  latex_headers={**short, "Accuracy": "Acc.", "Mean class acc.": stack("Mean", "class"),
                                 "Δ prev.": r"$\Delta$"},
                  wide=True, ci_columns=["Accuracy", "Mean class acc."], markdown_only=["Δ full"],
                  latex_notes=abbreviations)  # the Markdown table spells the classes out
    return _with_stats(table, got, ok, f"Δ: accuracy of the row minus the row above (prev.) or the full model "
                       f"{full} (full; in the Markdown table and the stats file; LaTeX's Δ is prev.)")


def loss_table(runs: pd.DataFrame) -> Table:
    """Table 5: one column per data set, each with its own n column; a grid point is (data set, split, seed),
    so a finished split of one data set never hides the same split failed on another. PCCE is compared with
    CE per preset and data set."""
    ok = runs[runs["status"] == "FINISHED"]
    datasets = [d for d in ("ve8", "e6", "synth") if d in set(runs["dataset"])] or sorted(set(runs["dataset"]))
    cols = [d.upper() for d in datasets] + [f"Δ {d.upper()}" for d in datasets]
    rows, got = [], Collector("table5")
    keyed = runs.assign(key=runs["preset"] + "|" + runs["loss"])
    keys = set(keyed["key"])
    missing_by = {}  # data set -> row key -> its missing (split, seed) points in that data set
    for d in datasets:
        part = keyed[keyed["dataset"] == d]
        gone = missing_points(part, "key")
        points = sorted(set(zip(part["split"], part["seed"])), key=str)
        for key in keys - set(part["key"]):  # a row with no run at all on this data set misses every point
            gone[key] = [f"{s}/seed {int(x) if x == x else x}" for s, x in points]
        missing_by[d] = gone
    for preset in ["VS+VCW+VT", "VS+VCW+VT+AT"]:
        for loss in ["ce", "pcce"]:
            key, label = f"{preset}|{loss}", (preset, loss.upper())
            cells, ref = {}, {}
            for d in datasets:
                part = ok[(ok["preset"] == preset) & (ok["loss"] == loss) & (ok["dataset"] == d)]
                cells[d.upper()] = got.cell(label, d.upper(), part, "test_acc")
                if loss == "pcce":
                    cells[f"Δ {d.upper()}"] = got.compare(label, (preset, "CE"), d.upper())
                ref[d.upper()] = paper.LOSSES.get((preset, loss), {}).get(d)
            if any(c[2] for k, c in cells.items() if isinstance(c, tuple)) or key in keys:
                by = {f"n {d.upper()}": missing_by[d].get(key, []) for d in datasets}
                rows.append({"label": label, "cells": cells, "paper": ref,
                             "missing": [f"{h[2:]} {p}" for h, gone in by.items() for p in gone],
                             "missing_by": by})
    table = Table("table5", "CE vs PCCE (Table 5 layout): test accuracy in %, mean ± std over splits", cols, rows,
                  bold_columns=[d.upper() for d in datasets], label_header=("Attentions", "Loss"),
                  latex_headers={f"Δ {d.upper()}": stack(r"$\Delta$", d.upper()) for d in datasets}, wide=True,
                  notes=["n: finished runs per data set."],
                  n_columns={f"n {d.upper()}": [d.upper()] for d in datasets},
                  n_latex_headers={f"n {d.upper()}": stack("$n$", d.upper()) for d in datasets},
                  ci_columns=[d.upper() for d in datasets])
    return _with_stats(table, got, ok, "Δ: accuracy with PCCE minus with CE, same attentions and data set")


def main_table(runs: pd.DataFrame, dataset: str) -> Table:
    ok = runs[(runs["status"] == "FINISHED") & (runs["dataset"] == dataset)]
    number = {"ve8": "1", "e6": "2"}.get(dataset, "1")
    got = Collector(f"table{number}_{dataset}")
    rows = [{"label": name, "cells": {"Accuracy": acc}, "paper": {}, "missing": []}
            for name, acc in paper.BASELINES.get(dataset, [])]
    if dataset in paper.VAANET:
        rows.append({"label": "VAANet (paper)", "cells": {"Accuracy": paper.VAANET[dataset]}, "paper": {}, "missing": []})
    missing = missing_points(runs[runs["dataset"] == dataset], "preset")
    rows.append({"label": "VAANet (this run)", "cells": {"Accuracy": got.cell("VAANet (this run)", "Accuracy", ok,
                                                                              "test_acc")},
                 "paper": {"Accuracy": paper.VAANET.get(dataset)}, "missing": sum(missing.values(), [])})
    cited = "; cited rows are the published numbers" if len(rows) > 1 else " (no published numbers on this data set)"
    table = Table(got.name, f"VAANet vs the literature on {dataset.upper()} (Table {number} layout): "
                  f"accuracy in %{cited}", ["Accuracy"], rows, bold_columns=["Accuracy"],
                  label_header=("Method",), latex_headers={"Accuracy": "Acc."}, ci_columns=["Accuracy"])
    return _with_stats(table, got, ok)


def lambda_table(runs: pd.DataFrame, dataset: str | None = None) -> Table:
    """Accuracy per lambda over one data set's runs, each lambda compared with lambda = 0 (CE) when the sweep
    has it; ``dataset`` names the table (lambda_<dataset>) when a report holds sweeps of several."""
    ok = runs[runs["status"] == "FINISHED"]
    name = f"lambda_{dataset}" if dataset else "lambda"
    rows, got = [], Collector(name)
    missing = missing_points(runs.assign(lamkey=runs["lam"].astype(str)), "lamkey")
    lams = sorted(set(runs["lam"].dropna()))
    for lam in lams:
        part = ok[ok["lam"] == lam]
        label = f"{lam:g}"
        cells = {"Accuracy": got.cell(label, "Accuracy", part, "test_acc"),
                 "Polarity acc.": got.cell(label, "Polarity acc.", part, "test_polarity_acc")}
        if 0 in lams and lam != 0:
            cells["Δ λ=0"] = got.compare(label, "0", "Accuracy")
            got.compare(label, "0", "Polarity acc.")
        rows.append({"label": label, "cells": cells, "paper": {}, "missing": missing.get(str(lam), [])})
    columns = ["Accuracy", "Polarity acc."] + (["Δ λ=0"] if 0 in lams and len(lams) > 1 else [])
    table = Table(name, f"PCCE penalty lambda (0 = CE){f' on {dataset.upper()}' if dataset else ''}: test accuracy "
                  "in %, mean ± std over splits", columns, rows, bold_columns=["Accuracy", "Polarity acc."],
                  label_header=("λ",), latex_headers={"Polarity acc.": stack("Polarity", "acc."),
                                                      "Δ λ=0": stack(r"$\Delta$", r"$\lambda$=0")},
                  ci_columns=["Accuracy", "Polarity acc."])
    return _with_stats(table, got, ok, "Δ: accuracy at this λ minus at λ = 0 (CE)")


def attention_truth_table(runs: pd.DataFrame) -> Table | None:
    ok = runs[runs["status"] == "FINISHED"]
    if "test_temporal_on_key" not in ok and "test_spatial_in_box" not in ok:
        return None
    cols = ["Temporal on key", "(uniform)", "Spatial in box", "(uniform) "]
    metrics = dict(zip(cols, ("test_temporal_on_key", "test_temporal_on_key_uniform", "test_spatial_in_box",
                              "test_spatial_in_box_uniform")))
    rows, got = [], Collector("attention_vs_truth")
    for preset in [p for p in ABLATION_ORDER + ["V", "V+A"] if p in set(ok["preset"])]:
        part = ok[ok["preset"] == preset]
        if part.get("test_temporal_on_key", pd.Series(dtype=float)).isna().all():
            continue  # no visual stream (AT): nothing to score
        cells = {c: got.cell(preset, c, part, m) for c, m in metrics.items()}
        rows.append({"label": preset, "cells": cells, "paper": {}, "missing": []})
    return _with_stats(Table("attention_vs_truth", "Attention against the synthetic ground truth: share (%) of temporal attention "
                 "on the key segments and of spatial attention inside the evidence box, beside uniform attention",
                 cols, rows, bold_columns=["Temporal on key", "Spatial in box"], label_header=("Attentions",),
                 latex_headers={"Temporal on key": stack("Temporal", "on key"), "(uniform)": stack("", "(uniform)"),
                                "Spatial in box": stack("Spatial", "in box"), "(uniform) ": stack("", "(uniform)")},
                 wide=True), got, ok)


def _with_stats(table: Table, got: Collector, ok: pd.DataFrame, delta_note: str | None = None) -> Table:
    """The table's statistics, the note that says how to read its Δ column, and the sentences on what the
    study resolves and where its variance comes from (on the first compared metric, else the first one)."""
    table.stats = got.frame()
    if delta_note and got.comparisons:
        table.notes.append(f"{delta_note}; its 95 % t interval in [ ] (Markdown) or as ± its half-width (LaTeX). "
                           f"{stats.TEST_NOTE}")
    metrics = list(dict.fromkeys(got.samples[(r, c)][0] for r, _, c in got.comparisons)) or \
        list(dict.fromkeys(m for m, _ in got.samples.values()))[:1]
    for metric in metrics[:1]:
        table.notes += [x for x in (stats.resolution_sentence(table.stats, metric, ok["split"].nunique(),
                                                              ok["seed"].nunique()),
                                    stats.variance_sentence(table.stats, metric)) if x]
    return table
