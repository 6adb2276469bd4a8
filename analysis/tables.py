"""Aggregation over splits and seeds, paired tests, and the paper's table layouts in LaTeX / Markdown.

Every cell is mean ± std (in %) over the finished runs of a row; ``n`` says how many. A grid point
that failed or never ran (a split/seed that other rows of the same study have) is listed in
``missing`` and flagged in the table, never silently averaged away.
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


def summarize(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float) * 100
    if len(v) == 0:
        return (np.nan, np.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))


def paired_p(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test_acc") -> float:
    """Paired t-test over the (split, seed) pairs present in both a and b."""
    ka = a.set_index(["split", "seed"])[metric]
    kb = b.set_index(["split", "seed"])[metric]
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
                                "p vs previous": "$p$"}, wide=True)


def loss_table(runs: pd.DataFrame) -> Table:
    ok = runs[runs["status"] == "FINISHED"]
    datasets = [d for d in ("ve8", "e6", "synth") if d in set(runs["dataset"])] or sorted(set(runs["dataset"]))
    cols = [d.upper() for d in datasets] + [f"p {d.upper()}" for d in datasets]
    rows = []
    keyed = runs.assign(key=runs["preset"] + "|" + runs["loss"])
    missing = missing_points(keyed, "key")
    for preset in ["VS+VCW+VT", "VS+VCW+VT+AT"]:
        for loss in ["ce", "pcce"]:
            cells, ref = {}, {}
            for d in datasets:
                part = ok[(ok["preset"] == preset) & (ok["loss"] == loss) & (ok["dataset"] == d)]
                cells[d.upper()] = summarize(part["test_acc"]) if len(part) else (np.nan, np.nan, 0)
                if loss == "pcce":
                    ce = ok[(ok["preset"] == preset) & (ok["loss"] == "ce") & (ok["dataset"] == d)]
                    cells[f"p {d.upper()}"] = paired_p(part, ce)
                ref[d.upper()] = paper.LOSSES.get((preset, loss), {}).get(d)
            if any(c[2] for k, c in cells.items() if isinstance(c, tuple)) or f"{preset}|{loss}" in missing:
                rows.append({"label": (preset, loss.upper()), "cells": cells, "paper": ref,
                             "missing": missing.get(f"{preset}|{loss}", [])})
    return Table("table5", "CE vs PCCE (Table 5 layout): test accuracy in %, mean ± std over splits", cols, rows,
                 bold_columns=[d.upper() for d in datasets], label_header=("Attentions", "Loss"),
                 latex_headers={f"p {d.upper()}": f"$p$ {d.upper()}" for d in datasets}, wide=True,
                 notes=["p: paired t-test PCCE vs CE over splits/seeds."])


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
def _best(table: Table) -> dict[str, float]:
    best = {}
    for c in table.bold_columns:
        means = [r["cells"][c][0] for r in table.rows if isinstance(r["cells"].get(c), tuple) and r["cells"][c][2]]
        means += [r["cells"][c] for r in table.rows if isinstance(r["cells"].get(c), float)]
        if means:
            best[c] = max(means)
    return best


def _cell(value, column: str, best: dict, bold, compare: float | None) -> str:
    if value is None:
        return ""
    if column.startswith("p"):
        return "" if value != value else f"{value:.3f}"
    if isinstance(value, tuple):
        mean, std, n = value
        if n == 0:
            return "missing"
        text = f"{mean:.1f} ± {std:.1f}"
        is_best = column in best and np.isclose(mean, best[column])
    else:
        text, is_best = f"{value:.1f}", column in best and np.isclose(value, best[column])
    text = bold(text) if is_best else text
    if compare is not None and isinstance(value, tuple) and value[2]:
        text += f" ({value[0] - compare:+.1f})"
    return text


def to_markdown(table: Table, compare_paper: bool = False) -> str:
    best = _best(table)
    header = list(table.label_header) + table.columns + ["n"]
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.rows:
        label = list(r["label"]) if isinstance(r["label"], tuple) else [r["label"]]
        cells = [_cell(r["cells"].get(c), c, best, lambda s: f"**{s}**",
                       r["paper"].get(c) if compare_paper else None) for c in table.columns]
        ns = [v[2] for v in r["cells"].values() if isinstance(v, tuple)]
        n = str(max(ns)) if ns else "cited"
        if r["missing"]:
            n += f" (missing: {', '.join(r['missing'])})"
        lines.append("| " + " | ".join(label + cells + [n]) + " |")
    if compare_paper and any(v is not None for r in table.rows for v in r["paper"].values()):
        lines += ["", "(±x.x) after a cell: difference to the paper's number."]
    lines += [""] + [f"_{n}_" for n in table.notes]
    return "\n".join(lines) + "\n"


def abbreviate(name: str) -> str:
    """A class name for a narrow header: up to four letters as is, else its first three and a dot."""
    return name if len(name) <= 4 else name[:3] + "."


def stack(*lines: str) -> str:
    """A header of several centred lines in one LaTeX cell (no package needed)."""
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\".join(lines) + r"\end{tabular}"


def _tex(text: str) -> str:
    return text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$").replace("λ", r"$\lambda$")


STD_STYLES = ("row", "inline", "none")


def _tex_cell(value, column: str, best: dict, std: str) -> tuple[str, str]:
    """(mean text, std text) of one cell: the mean in bold when best; the std in scriptsize."""
    if value is None:
        return "", ""
    if column.startswith("p"):
        return ("" if value != value else f"{value:.3f}".removeprefix("0")), ""  # ".012", as papers print p
    mean, sd = (value[0], value[1]) if isinstance(value, tuple) else (value, None)
    if isinstance(value, tuple) and value[2] == 0:
        return "--", ""
    text = f"{mean:.1f}"
    if column in best and np.isclose(mean, best[column]):
        text = rf"\textbf{{{text}}}"
    spread = "" if sd is None or std == "none" else rf"{{\scriptsize$\pm${sd:.1f}}}"
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
    header = [_tex(h) for h in table.label_header] + [table.latex_headers.get(c, _tex(c)) for c in table.columns]
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize" if table.wide else r"\small",
             rf"\setlength{{\tabcolsep}}{{{1.5 if table.wide else 2.5}pt}}",
             f"\\caption{{{_tex(table.caption)}}}", f"\\label{{tab:{table.name}}}",
             f"\\begin{{tabular}}{{{'l' * labels + 'c' * (len(table.columns) + 1)}}}", r"\toprule",
             " & ".join(header + ["$n$"]) + r" \\", r"\midrule"]
    previous = None
    for r in table.rows:
        label = [_tex(x) for x in (r["label"] if isinstance(r["label"], tuple) else (r["label"],))]
        label, previous = ([""] + label[1:] if labels > 1 and label[0] == previous else label), label[0]  # as Table 5
        cells = [_tex_cell(r["cells"].get(c), c, best, std) for c in table.columns]
        ns = [v[2] for v in r["cells"].values() if isinstance(v, tuple)]
        n = (str(max(ns)) if ns else "--") + (r"$^\dagger$" if r["missing"] else "")
        rows = [label + [m for m, _ in cells] + [n]]
        if std == "row" and any(s for _, s in cells):
            rows.append([""] * labels + [s for _, s in cells] + [""])
        ref = {c: v for c, v in r["paper"].items() if v is not None} if compare_paper else {}
        if ref:
            rows.append([r"\quad\textit{paper}"] + [""] * (labels - 1)
                        + [rf"\textit{{{ref[c]:.1f}}}" if c in ref else "" for c in table.columns] + [""])
        lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if std == "inline":  # last resort: shrink to the line, only when wider
        start = lines.index(next(x for x in lines if x.startswith(r"\begin{tabular}")))
        lines[start] = r"\sbox0{" + lines[start]
        lines[-1] += r"}\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi"
    notes = list(table.notes)
    if any(r["missing"] for r in table.rows):
        notes.append("$^\\dagger$ some grid points failed or never ran; see the Markdown report.")
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(_tex(n) for n in notes) + r"\par}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"
