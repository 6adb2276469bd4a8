"""Aggregation over splits and seeds, paired tests, and the paper's table layouts in LaTeX / Markdown.

Every cell is mean ± std (in %) over the finished runs of a row; ``n`` says how many. One run has no std:
its cell is the mean and "± –" (a table note says so), never "± 0.0". A grid point that failed or never
ran (a split/seed that other rows of the same study have) is listed in ``missing`` and flagged in the
table, never silently averaged away. Bold marks the best mean as printed (ties all bold) among the rows
with the column's full n; a row with fewer finished runs does not compete (a table note says so).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

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
    p_columns: list[str] = field(default_factory=list)  # the columns that hold a p value (printed as p)


def summarize(values) -> tuple[float, float, int]:
    """(mean, sample std, n) in %; the std is NaN (undefined) for one value, as both are for none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float) * 100
    if len(v) == 0:
        return (np.nan, np.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else np.nan, len(v))


def paired_p(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test_acc") -> float:
    """Paired t-test over the (split, seed) pairs present in both a and b."""
    ka = a.set_index(["split", "seed"])[metric]
    kb = b.set_index(["split", "seed"])[metric]
    for k in (ka, kb):
        if not k.index.is_unique:  # a split and seed twice: the pairs would be wrong
            twice = k.index[k.index.duplicated()][0]
            raise ValueError(f"paired t-test: split {twice[0]} seed {twice[1]} appears twice in one row (runs of "
                             "two studies or experiments pooled); keep one run per split and seed")
    common = ka.index.intersection(kb.index)
    if len(common) < 2:
        return float("nan")
    x, y = ka.loc[common].to_numpy(float), kb.loc[common].to_numpy(float)
    if np.allclose(x - y, (x - y)[0]):
        return float("nan")  # no variance in the differences: the test is undefined
    return float(stats.ttest_rel(x, y).pvalue)


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
    runs = runs[runs["dataset"] == dataset]
    ok = runs[runs["status"] == "FINISHED"]
    number = {"ve8": "3", "e6": "4"}.get(dataset, "3")
    paper_ds = dataset if dataset in paper.ABLATION else None
    cols = classes + ["Accuracy", "Mean class acc.", "p vs previous"]
    rows, previous = [], None
    missing = missing_points(runs, "preset")
    for preset in [p for p in ABLATION_ORDER if p in set(runs["preset"])]:
        part = ok[ok["preset"] == preset]
        cells = {c: summarize(part.get(f"test_acc_{c}", pd.Series(dtype=float))) for c in classes}
        cells["Accuracy"] = summarize(part["test_acc"]) if "test_acc" in part else (np.nan, np.nan, 0)
        cells["Mean class acc."] = summarize(part.get("test_mean_class_acc", pd.Series(dtype=float)))
        cells["p vs previous"] = paired_p(part, previous) if previous is not None else None
        ref = {c: paper.ablation_number(paper_ds, preset, c) for c in classes + ["Accuracy"]} if paper_ds else {}
        rows.append({"label": preset, "cells": cells, "paper": ref, "missing": missing.get(preset, [])})
        previous = part
    notes = ["Accuracy = overall top-1 accuracy over test videos (the paper's 'Average'); mean class acc. = mean of "
             "the per-class accuracies.", "p: paired t-test over splits/seeds against the row above."]
    short = {c: abbreviate(c) for c in classes}
    notes.append("Classes: " + ", ".join(f"{s} {c}" for c, s in short.items() if s != c) + ".")
    return Table(f"table{number}_{dataset}", f"Ablation of the attentions on {dataset.upper()} "
                 f"(Table {number} layout): test accuracy in %, mean ± std over splits", cols, rows,
                 bold_columns=classes + ["Accuracy", "Mean class acc."], notes=notes, label_header=("Attentions",),
                 latex_headers={**short, "Accuracy": "Acc.", "Mean class acc.": stack("Mean", "class"),
                                "p vs previous": "$p$"}, wide=True,
                 p_columns=["p vs previous"])


def loss_table(runs: pd.DataFrame) -> Table:
    """Table 5: one column per data set, each with its own n column; a grid point is (data set, split, seed),
    so a finished split of one data set never hides the same split failed on another."""
    ok = runs[runs["status"] == "FINISHED"]
    datasets = [d for d in ("ve8", "e6", "synth") if d in set(runs["dataset"])] or sorted(set(runs["dataset"]))
    cols = [d.upper() for d in datasets] + [f"p {d.upper()}" for d in datasets]
    rows = []
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
            key = f"{preset}|{loss}"
            cells, ref = {}, {}
            for d in datasets:
                part = ok[(ok["preset"] == preset) & (ok["loss"] == loss) & (ok["dataset"] == d)]
                cells[d.upper()] = summarize(part["test_acc"]) if len(part) else (np.nan, np.nan, 0)
                if loss == "pcce":
                    ce = ok[(ok["preset"] == preset) & (ok["loss"] == "ce") & (ok["dataset"] == d)]
                    cells[f"p {d.upper()}"] = paired_p(part, ce)
                ref[d.upper()] = paper.LOSSES.get((preset, loss), {}).get(d)
            if any(c[2] for k, c in cells.items() if isinstance(c, tuple)) or key in keys:
                by = {f"n {d.upper()}": missing_by[d].get(key, []) for d in datasets}
                rows.append({"label": (preset, loss.upper()), "cells": cells, "paper": ref,
                             "missing": [f"{h[2:]} {p}" for h, gone in by.items() for p in gone],
                             "missing_by": by})
    return Table("table5", "CE vs PCCE (Table 5 layout): test accuracy in %, mean ± std over splits", cols, rows,
                 bold_columns=[d.upper() for d in datasets], label_header=("Attentions", "Loss"),
                 latex_headers={f"p {d.upper()}": f"$p$ {d.upper()}" for d in datasets}, wide=True,
                 notes=["p: paired t-test PCCE vs CE over splits/seeds; n: finished runs per data set."],
                 n_columns={f"n {d.upper()}": [d.upper()] for d in datasets},
                 p_columns=[f"p {d.upper()}" for d in datasets],
                 n_latex_headers={f"n {d.upper()}": stack("$n$", d.upper()) for d in datasets})


def main_table(runs: pd.DataFrame, dataset: str) -> Table:
    ok = runs[(runs["status"] == "FINISHED") & (runs["dataset"] == dataset)]
    number = {"ve8": "1", "e6": "2"}.get(dataset, "1")
    rows = [{"label": name, "cells": {"Accuracy": acc}, "paper": {}, "missing": []}
            for name, acc in paper.BASELINES.get(dataset, [])]
    if dataset in paper.VAANET:
        rows.append({"label": "VAANet (paper)", "cells": {"Accuracy": paper.VAANET[dataset]}, "paper": {}, "missing": []})
    missing = missing_points(runs[runs["dataset"] == dataset], "preset")
    rows.append({"label": "VAANet (this run)", "cells": {"Accuracy": summarize(ok["test_acc"])},
                 "paper": {"Accuracy": paper.VAANET.get(dataset)}, "missing": sum(missing.values(), [])})
    cited = "; cited rows are the published numbers" if len(rows) > 1 else " (no published numbers on this data set)"
    return Table(f"table{number}_{dataset}", f"VAANet vs the literature on {dataset.upper()} (Table {number} layout): "
                 f"accuracy in %{cited}", ["Accuracy"], rows, bold_columns=["Accuracy"],
                 label_header=("Method",), latex_headers={"Accuracy": "Acc."})


def lambda_table(runs: pd.DataFrame, dataset: str | None = None) -> Table:
    """Accuracy per lambda over one data set's runs; ``dataset`` names the table (lambda_<dataset>) when a
    report holds sweeps of several."""
    ok = runs[runs["status"] == "FINISHED"]
    rows = []
    missing = missing_points(runs.assign(lamkey=runs["lam"].astype(str)), "lamkey")
    for lam in sorted(set(runs["lam"].dropna())):
        part = ok[ok["lam"] == lam]
        rows.append({"label": f"{lam:g}", "cells": {"Accuracy": summarize(part["test_acc"]),
                                                   "Polarity acc.": summarize(part.get("test_polarity_acc", []))},
                     "paper": {}, "missing": missing.get(str(lam), [])})
    return Table(f"lambda_{dataset}" if dataset else "lambda",
                 f"PCCE penalty lambda (0 = CE){f' on {dataset.upper()}' if dataset else ''}: test accuracy in %, "
                 "mean ± std over splits",
                 ["Accuracy", "Polarity acc."], rows, bold_columns=["Accuracy", "Polarity acc."],
                 label_header=("λ",), latex_headers={"Polarity acc.": stack("Polarity", "acc.")})


def attention_truth_table(runs: pd.DataFrame) -> Table | None:
    ok = runs[runs["status"] == "FINISHED"]
    if "test_temporal_on_key" not in ok and "test_spatial_in_box" not in ok:
        return None
    cols = ["Temporal on key", "(uniform)", "Spatial in box", "(uniform) "]
    rows = []
    for preset in [p for p in ABLATION_ORDER + ["V", "V+A"] if p in set(ok["preset"])]:
        part = ok[ok["preset"] == preset]
        if part.get("test_temporal_on_key", pd.Series(dtype=float)).isna().all():
            continue  # no visual stream (AT): nothing to score
        cells = {"Temporal on key": summarize(part.get("test_temporal_on_key", [])),
                 "(uniform)": summarize(part.get("test_temporal_on_key_uniform", [])),
                 "Spatial in box": summarize(part.get("test_spatial_in_box", [])),
                 "(uniform) ": summarize(part.get("test_spatial_in_box_uniform", []))}
        rows.append({"label": preset, "cells": cells, "paper": {}, "missing": []})
    return Table("attention_vs_truth", "Attention against the synthetic ground truth: share (%) of temporal attention "
                 "on the key segments and of spatial attention inside the evidence box, beside uniform attention",
                 cols, rows, bold_columns=["Temporal on key", "Spatial in box"], label_header=("Attentions",),
                 latex_headers={"Temporal on key": stack("Temporal", "on key"), "(uniform)": stack("", "(uniform)"),
                                "Spatial in box": stack("Spatial", "in box"), "(uniform) ": stack("", "(uniform)")},
                 wide=True)


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
    if any(isinstance(r["cells"].get(c), float) and r["cells"][c] != r["cells"][c] for c in table.p_columns
           for r in table.rows):
        notes.append("p –: the paired t-test is undefined (fewer than 2 paired runs, or no variance in the "
                     "differences).")
    if any(isinstance(r["cells"].get(c), tuple) and 0 < r["cells"][c][2] < _full_n(table, c)
           for c in table.bold_columns for r in table.rows):
        notes.append("Bold: best mean as printed (ties all bold) among rows with all runs of the column "
                     "(full n); a row with fewer finished runs is not bold.")
    return notes


def _cell(value, column: str, best: dict, bold, compare: float | None, is_p: bool = False) -> str:
    if value is None:
        return ""
    if is_p:
        return _p_text(value)
    if isinstance(value, tuple):
        mean, std, n = value
        if n == 0:
            return "missing"
        text = f"{_printed(mean)} ± {'–' if n < 2 or std != std else f'{std:.1f}'}"
    else:
        text = _printed(value)
    text = bold(text) if _is_best(value, column, best) else text
    if compare is not None and isinstance(value, tuple) and value[2]:
        text += f" ({value[0] - compare:+.1f})"
    return text


def to_markdown(table: Table, compare_paper: bool = False) -> str:
    best = _best(table)
    n_cols = _n_columns(table)
    header = list(table.label_header) + table.columns + list(n_cols)
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.rows:
        label = list(r["label"]) if isinstance(r["label"], tuple) else [r["label"]]
        cells = [_cell(r["cells"].get(c), c, best, lambda s: f"**{s}**",
                       r["paper"].get(c) if compare_paper else None, c in table.p_columns) for c in table.columns]
        ns = []
        for h, cols in n_cols.items():
            n, gone = _n_text(r, cols, "–"), _row_missing(table, r, h)
            ns.append(n + (f" (missing: {', '.join(gone)})" if gone else ""))
        lines.append("| " + " | ".join(label + cells + ns) + " |")
    if compare_paper and any(v is not None for r in table.rows for v in r["paper"].values()):
        lines += ["", "(±x.x) after a cell: difference to the paper's number."]
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
            .replace("λ", r"$\lambda$").replace("–", "--"))


STD_STYLES = ("row", "inline", "none")


def _tex_cell(value, column: str, best: dict, std: str, is_p: bool = False) -> tuple[str, str]:
    """(mean text, std text) of one cell: the mean in bold when best; the std in scriptsize."""
    if value is None:
        return "", ""
    if is_p:  # ".012", as papers print p; "$<$.001" below .0005; "--" undefined
        text = _p_text(value)
        return ("$<$.001" if text.startswith("<") else "--" if text == "–" else text.removeprefix("0")), ""
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
    env = "table*" if table.wide else "table"
    labels = len(table.label_header)
    n_cols = _n_columns(table)
    header = [_tex(h) for h in table.label_header] + [table.latex_headers.get(c, _tex(c)) for c in table.columns]
    header += [table.n_latex_headers.get(h, "$n$" if h == "n" else _tex(h)) for h in n_cols]
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize" if table.wide else r"\small",
             rf"\setlength{{\tabcolsep}}{{{1.5 if table.wide else 2.5}pt}}",
             f"\\caption{{{_tex(table.caption)}}}", f"\\label{{tab:{table.name}}}",
             f"\\begin{{tabular}}{{{'l' * labels + 'c' * (len(table.columns) + len(n_cols))}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for r in table.rows:
        label = [_tex(x) for x in (r["label"] if isinstance(r["label"], tuple) else (r["label"],))]
        label, previous = ([""] + label[1:] if labels > 1 and label[0] == previous else label), label[0]  # as Table 5
        cells = [_tex_cell(r["cells"].get(c), c, best, std, c in table.p_columns) for c in table.columns]
        ns = [_n_text(r, cols, "--").replace("cited", "--") + (r"$^\dagger$" if _row_missing(table, r, h) else "")
              for h, cols in n_cols.items()]
        rows = [label + [m for m, _ in cells] + ns]
        if std == "row" and any(s for _, s in cells):
            rows.append([""] * labels + [s for _, s in cells] + [""] * len(n_cols))
        ref = {c: v for c, v in r["paper"].items() if v is not None} if compare_paper else {}
        if ref:
            rows.append([r"\quad\textit{paper}"] + [""] * (labels - 1)
                        + [rf"\textit{{{ref[c]:.1f}}}" if c in ref else "" for c in table.columns] + [""] * len(n_cols))
        lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if std == "inline":  # last resort: shrink to the line, only when wider
        start = lines.index(next(x for x in lines if x.startswith(r"\begin{tabular}")))
        lines[start] = r"\sbox0{" + lines[start]
        lines[-1] += r"}\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi"
    notes = list(table.notes) + _rule_notes(table, std_shown=std != "none")
    if any(r["missing"] for r in table.rows):
        notes.append("$^\\dagger$ some grid points failed or never ran; see the Markdown report.")
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(_tex(n) for n in notes) + r"\par}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"
