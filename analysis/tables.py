"""Aggregation over splits and seeds, paired tests, and the paper's table layouts in LaTeX / Markdown.

Every cell is mean ± std (in %) over the finished runs of a row; ``n`` says how many. One run has no std:
its cell is the mean and "± –" (a table note says so), never "± 0.0". A grid point that failed or never
ran (a split/seed that other rows of the same study have) is listed in ``missing`` and flagged in the
table, never silently averaged away. Bold marks the best mean as printed (ties all bold) among the rows
with the column's full n; a row with fewer finished runs does not compete (a table note says so).

Each table names its comparisons (Tables 3/4: each row against the row above and against the full model;
Table 5: PCCE against CE per preset and data set; the lambda sweep: each lambda against lambda = 0). Their
statistics (:mod:`analysis.stats`: paired difference with its interval, Holm-corrected p, effect size,
resolution) are in ``Table.stats``; a Δ column prints the difference, † where it is significant after
correction, and the interval where the page allows; one line under the table says what the study resolves.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from . import paper, stats


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
    stats: pd.DataFrame | None = None  # analysis.stats' frame: one row per cell and per comparison
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


# ---- rendering -----------------------------------------------------------------------------------
def _printed(mean: float) -> str:
    return f"{mean:.1f}"


def _full_n(table: Table, column: str) -> int:
    """The largest n of a column: a row competes for bold there only with this many finished runs."""
    return max((r["cells"][column][2] for r in table.rows if isinstance(r["cells"].get(column), tuple)), default=0)


def _competes(value, full: int) -> bool:
    """A cited number, or a cell over the column's full n of finished runs."""
    if isinstance(value, tuple):
        return value[2] > 0 and value[2] == full
    return isinstance(value, float) and value == value


def _best(table: Table) -> dict[str, tuple[str, int]]:
    """Per bold column: (the best mean as printed, the column's full n). Compared as printed (two cells both
    printing 55.0 are both bold), among cited numbers and the rows with the column's full n (a row with fewer
    runs is never bold, even where it ties)."""
    best = {}
    for c in table.bold_columns:
        full = _full_n(table, c)
        values = [r["cells"][c] for r in table.rows if _competes(r["cells"].get(c), full)]
        if values:
            best[c] = (_printed(max(float(_printed(v[0] if isinstance(v, tuple) else v)) for v in values)), full)
    return best


def _is_best(value, column: str, best: dict) -> bool:
    if column not in best or not _competes(value, best[column][1]):
        return False
    return _printed(value[0] if isinstance(value, tuple) else value) == best[column][0]


def delta(table: Table, d: Delta) -> dict:
    """A Δ cell's comparison from ``table.stats``; a pair the table holds the other way round (the full
    model against the row above it) with the difference and its interval negated."""
    f = table.stats[table.stats["kind"] == "comparison"]
    for row, ref, sign in ((d.row, d.ref, 1), (d.ref, d.row, -1)):
        hit = f[(f["row"] == row) & (f["ref_row"] == ref) & (f["column"] == d.column)]
        if len(hit):
            c = hit.iloc[0].to_dict()
            low, high = c["diff_ci_low"] * sign + 0.0, c["diff_ci_high"] * sign + 0.0  # + 0.0: no "-0.0"
            return {**c, "diff": c["diff"] * sign + 0.0, "diff_ci_low": min(low, high), "diff_ci_high": max(low, high)}
    raise KeyError(f"{table.name}: no comparison of {d.row} with {d.ref} in {d.column}")


def _interval(low: float, high: float, sep: str = ", ") -> str:
    return "" if low != low else f"[{low:.1f}{sep}{high:.1f}]"


def _p_text(value: float) -> str:
    """p to three decimals; below .0005 (it would print 0.000) as "<0.001"; undefined (NaN) as "–"."""
    return "–" if value != value else ("<0.001" if f"{value:.3f}" == "0.000" else f"{value:.3f}")


def _n_columns(table: Table) -> dict[str, list[str]]:
    return table.n_columns or {"n": table.columns}


def _n_text(row: dict, columns: list[str], dash: str) -> str:
    """The n of a row's cells in ``columns``: one number, or the range when they differ; "cited" without runs."""
    ns = [row["cells"][c][2] for c in columns if isinstance(row["cells"].get(c), tuple)]
    if not ns:
        return "cited"
    done = sorted({n for n in ns if n}) or [0]
    return str(done[0]) if len(done) == 1 else f"{done[0]}{dash}{done[-1]}"


def _row_missing(table: Table, row: dict, header: str) -> list[str]:
    return row.get("missing_by", {}).get(header, []) if table.n_columns else row["missing"]


def _single_runs(table: Table) -> bool:
    return any(isinstance(v, tuple) and v[2] == 1 for r in table.rows for v in r["cells"].values())


def _rule_notes(table: Table, std_shown: bool = True) -> list[str]:
    """Notes that say how to read the cells: one run (no std), and the bold rule where a row sat out."""
    notes = []
    if std_shown and _single_runs(table):
        notes.append("± –: one run, no std (undefined for n = 1).")
    if any(isinstance(v, Delta) and delta(table, v)["p_holm"] != delta(table, v)["p_holm"]
           for r in table.rows for v in r["cells"].values()):
        notes.append("p –: the paired t-test is undefined (fewer than 2 paired runs, or no variance in the "
                     "differences).")
    if any(isinstance(r["cells"].get(c), tuple) and 0 < r["cells"][c][2] < _full_n(table, c)
           for c in table.bold_columns for r in table.rows):
        notes.append("Bold: best mean as printed (ties all bold) among rows with all runs of the column "
                     "(full n); a row with fewer finished runs is not bold.")
    return notes


def _delta_markdown(c: dict) -> str:
    """"+2.1 [0.3, 3.9] p=0.012†": the difference, its interval, the corrected p, † when significant."""
    if c["n"] == 0:
        return "no pairs"
    text = " ".join(x for x in (f"{c['diff']:+.1f}", _interval(c["diff_ci_low"], c["diff_ci_high"]),
                                f"p={_p_text(c['p_holm'])}") if x)
    text += "†" if c["significant"] in (True,) else ""
    return text + (f" ({c['n']} pairs, {c['unpaired']} unpaired)" if c["unpaired"] else "")


def _cell(value, column: str, best: dict, bold, compare: float | None, ci: dict | None = None) -> str:
    """A Markdown cell; ``ci``: the cell's statistics, to print its interval after mean ± std."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return _delta_markdown(value)
    if isinstance(value, tuple):
        mean, std, n = value
        if n == 0:
            return "missing"
        text = f"{_printed(mean)} ± {'–' if n < 2 or std != std else f'{std:.1f}'}"
        if ci is not None and ci["ci_low"] == ci["ci_low"]:
            text += f" {_interval(ci['ci_low'], ci['ci_high'])}"
    else:
        text = _printed(value)
    text = bold(text) if _is_best(value, column, best) else text
    if compare is not None and isinstance(value, tuple) and value[2]:
        text += f" ({value[0] - compare:+.1f})"
    return text


def _value(table: Table, row: dict, column: str):
    """A row's cell, a Δ cell as its comparison's numbers."""
    value = row["cells"].get(column)
    return delta(table, value) if isinstance(value, Delta) else value


def _cell_stats(table: Table, row: dict, column: str) -> dict | None:
    if column not in table.ci_columns or table.stats is None:
        return None
    f = table.stats
    hit = f[(f["kind"] == "cell") & (f["row"] == label_text(row["label"])) & (f["column"] == column)]
    return hit.iloc[0].to_dict() if len(hit) else None


def to_markdown(table: Table, compare_paper: bool = False) -> str:
    best = _best(table)
    n_cols = _n_columns(table)
    header = list(table.label_header) + table.columns + list(n_cols)
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.rows:
        label = list(r["label"]) if isinstance(r["label"], tuple) else [r["label"]]
        cells = [_cell(_value(table, r, c), c, best, lambda s: f"**{s}**",
                       r["paper"].get(c) if compare_paper else None, _cell_stats(table, r, c)) for c in table.columns]
        ns = []
        for h, cols in n_cols.items():
            n, gone = _n_text(r, cols, "–"), _row_missing(table, r, h)
            ns.append(n + (f" (missing: {', '.join(gone)})" if gone else ""))
        lines.append("| " + " | ".join(label + cells + ns) + " |")
    if compare_paper and any(v is not None for r in table.rows for v in r["paper"].values()):
        lines += ["", "(±x.x) after a cell: difference to the paper's number."]
    if table.ci_columns and table.stats is not None:
        lines += ["", f"[ ] after mean ± std: 95 % t interval of the mean ({', '.join(table.ci_columns)})."]
    lines += [""] + [f"_{n}_" for n in table.notes + _rule_notes(table)]
    return "\n".join(lines) + "\n"


def abbreviate(name: str) -> str:
    """A class name for a narrow header: up to four letters as is, else its first three and a dot."""
    return name if len(name) <= 4 else name[:3] + "."


def stack(*lines: str) -> str:
    """A header of several centred lines in one LaTeX cell (no package needed)."""
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\".join(lines) + r"\end{tabular}"


def _tex(text: str) -> str:
    return (text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")
            .replace("λ", r"$\lambda$").replace("–", "--").replace("†", r"$^\dagger$").replace("Δ", r"$\Delta$")
            .replace("α", r"$\alpha$").replace("≥", r"$\geq$").replace("×", r"$\times$").replace("²", r"$^2$"))


STD_STYLES = ("row", "inline", "none")


def _tex_cell(value, column: str, best: dict, std: str) -> tuple[str, str]:
    """(mean text, std text) of one cell: the mean in bold when best; the std in scriptsize. A Δ cell: the
    difference with † when significant after correction, its interval as ± half-width in scriptsize ("--": no
    pairs)."""
    if value is None:
        return "", ""
    if isinstance(value, dict):
        if value["n"] == 0:
            return "--", ""
        text = rf"{{\scriptsize{value['diff']:+.1f}}}" + (r"$^\dagger$" if value["significant"] in (True,) else "")
        half = (value["diff_ci_high"] - value["diff_ci_low"]) / 2  # the t interval is symmetric: Δ ± half
        spread = rf"{{\scriptsize$\pm${half:.1f}}}" if half == half and std != "none" else ""
        return (text + spread, "") if std == "inline" else (text, spread)
    mean, sd = (value[0], value[1]) if isinstance(value, tuple) else (value, None)
    if isinstance(value, tuple) and value[2] == 0:
        return "--", ""
    text = _printed(mean)
    if _is_best(value, column, best):
        text = rf"\textbf{{{text}}}"
    if sd is None or std == "none":
        spread = ""
    else:  # one run: "--", no std
        spread = rf"{{\scriptsize$\pm${'--' if value[2] < 2 or sd != sd else f'{sd:.1f}'}}}"
    return (text + spread, "") if std == "inline" else (text, spread)


def to_latex(table: Table, compare_paper: bool = False, std: str = "row") -> str:
    r"""A booktabs table in the paper's layout that fits a one-column ``article`` and a two-column page:
    wide tables are ``table*`` (full width) in footnotesize, with compact headers and narrow column gaps.
    ``std``: "row" (the std in scriptsize in a row under the means), "inline" (``41.4{\scriptsize$\pm$1.2}``)
    or "none" (mean only). Inline stds do not fit a wide table, so as a last resort an inline table is shrunk
    to the line width when wider (needs ``\usepackage{graphicx}`` then; the other styles fit without).
    ``compare_paper`` adds an italic row of the paper's numbers under each row that has them."""
    if std not in STD_STYLES:
        raise ValueError(f"std must be one of {STD_STYLES}, got {std!r}")
    best = _best(table)
    columns = [c for c in table.columns if c not in table.markdown_only]
    env = "table*" if table.wide else "table"
    labels = len(table.label_header)
    n_cols = _n_columns(table)
    header = [_tex(h) for h in table.label_header] + [table.latex_headers.get(c, _tex(c)) for c in columns]
    header += [table.n_latex_headers.get(h, "$n$" if h == "n" else _tex(h)) for h in n_cols]
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize" if table.wide else r"\small",
             rf"\setlength{{\tabcolsep}}{{{1.3 if table.wide else 2.5}pt}}",
             f"\\caption{{{_tex(table.caption)}}}", f"\\label{{tab:{table.name}}}",
             f"\\begin{{tabular}}{{{'l' * labels + 'c' * (len(columns) + len(n_cols))}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for r in table.rows:
        label = [_tex(x) for x in (r["label"] if isinstance(r["label"], tuple) else (r["label"],))]
        label, previous = ([""] + label[1:] if labels > 1 and label[0] == previous else label), label[0]  # as Table 5
        cells = [_tex_cell(_value(table, r, c), c, best, std) for c in columns]
        ns = [_n_text(r, cols, "--").replace("cited", "--") + (r"$^\ddagger$" if _row_missing(table, r, h) else "")
              for h, cols in n_cols.items()]
        rows = [label + [m for m, _ in cells] + ns]
        if std == "row" and any(s for _, s in cells):
            rows.append([""] * labels + [s for _, s in cells] + [""] * len(n_cols))
        ref = {c: v for c, v in r["paper"].items() if v is not None} if compare_paper else {}
        if ref:
            rows.append([r"\quad\textit{paper}"] + [""] * (labels - 1)
                        + [rf"\textit{{{ref[c]:.1f}}}" if c in ref else "" for c in columns] + [""] * len(n_cols))
        lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if std == "inline":  # last resort: shrink to the line, only when wider
        start = lines.index(next(x for x in lines if x.startswith(r"\begin{tabular}")))
        lines[start] = r"\sbox0{" + lines[start]
        lines[-1] += r"}\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi"
    notes = list(table.notes) + list(table.latex_notes) + _rule_notes(table, std_shown=std != "none")
    if any(r["missing"] for r in table.rows):
        notes.append("$^\\ddagger$ some grid points failed or never ran; see the Markdown report.")
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(_tex(n) for n in notes) + r"\par}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"
