"""The paper tables (:class:`analysis.tables.Table`) as Markdown and LaTeX: cells, bold, Δ columns, notes.

A cell is mean ± std in % (one run: "± –", never "± 0.0"), with its 95 % interval where the table asks for it
(Markdown). Bold marks the best mean as printed (ties all bold) among the rows with the column's full n of
finished runs. A Δ cell (:func:`delta`) prints a comparison from ``Table.stats``, † where it is significant
after Holm correction. :func:`to_latex` prints the std on a row of its own, inline or not at all
(:data:`STD_STYLES`).
"""
from __future__ import annotations

from .tables import Delta, Table, label_text


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
