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
    return Table(f"table{number}_{dataset}", f"Ablation of the attentions on {dataset.upper()} "
                 f"(Table {number} layout): test accuracy in %, mean ± std over splits", cols, rows,
                 bold_columns=classes + ["Accuracy", "Mean class acc."], notes=notes, label_header=("Attentions",))


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
    return Table(f"table{number}_{dataset}", f"VAANet vs the literature on {dataset.upper()} (Table {number} layout): "
                 "accuracy in %; cited rows are the published numbers", ["Accuracy"], rows, bold_columns=["Accuracy"],
                 label_header=("Method",))


def lambda_table(runs: pd.DataFrame) -> Table:
    ok = runs[runs["status"] == "FINISHED"]
    rows = []
    missing = missing_points(runs.assign(lamkey=runs["lam"].astype(str)), "lamkey")
    for lam in sorted(set(runs["lam"].dropna())):
        part = ok[ok["lam"] == lam]
        rows.append({"label": f"{lam:g}", "cells": {"Accuracy": summarize(part["test_acc"]),
                                                   "Polarity acc.": summarize(part.get("test_polarity_acc", []))},
                     "paper": {}, "missing": missing.get(str(lam), [])})
    return Table("lambda", "PCCE penalty lambda (0 = CE): test accuracy in %, mean ± std over splits",
                 ["Accuracy", "Polarity acc."], rows, bold_columns=["Accuracy", "Polarity acc."],
                 label_header=("λ",))


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
                 cols, rows, bold_columns=["Temporal on key", "Spatial in box"], label_header=("Attentions",))


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


def _tex(text: str) -> str:
    return text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$").replace("λ", r"$\lambda$")


def to_latex(table: Table, compare_paper: bool = False) -> str:
    best = _best(table)
    header = list(table.label_header) + table.columns + ["$n$"]
    spec = "l" * len(table.label_header) + "c" * (len(table.columns) + 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{_tex(table.caption)}}}",
             f"\\label{{tab:{table.name}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(h) if h != "$n$" else h for h in header) + r" \\", r"\midrule"]
    for r in table.rows:
        label = list(r["label"]) if isinstance(r["label"], tuple) else [r["label"]]
        cells = [_tex(_cell(r["cells"].get(c), c, best, lambda s: f"\\textbf{{{s}}}",
                            r["paper"].get(c) if compare_paper else None))
                 for c in table.columns]
        ns = [v[2] for v in r["cells"].values() if isinstance(v, tuple)]
        n = str(max(ns)) if ns else "--"
        if r["missing"]:
            n += r"$^\dagger$"
        lines.append(" & ".join([_tex(x) for x in label] + cells + [n]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if any(r["missing"] for r in table.rows):
        lines.append(r"\\[2pt]{\footnotesize $^\dagger$ some grid points failed or never ran; see the Markdown report.}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
