"""Every table a reader sees, from one place: one percent format, one mean ± std over seeds, and
one table type that renders as Markdown (summary.md, README, notebooks) and as HTML (index pages).

The code keeps fractions (``sclib.core.metrics``); readers get percent with two decimals, the unit
of the seed report. A study's spread is the sample standard deviation over seeds (ddof 1), the
same number ``numpy.std(values, ddof=1)`` and seaborn's ``errorbar="sd"`` give.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sclib import seed_report
from sclib.run.files import display_text
from sclib.run.records import BASELINES, Evaluation

# What makes Markdown (CommonMark/GFM, GitHub's math) do something in running text or a table
# cell; user text gets a backslash before each. An underscore inside a word ("OMP_NUM_THREADS")
# never emphasises in GFM, and "&" only starts an entity before "name;", so those stay as typed.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>|$~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|&(?=#?\w+;)")


def markdown_text(text: Any) -> str:
    """User text (a ``--note``, a class or variant name, a folder) as literal Markdown on one line.

    Newlines would end a table row or a list item, ``|`` a cell, ``<b>`` passes through as raw
    HTML, ``*`` and ``_`` emphasise, ``$`` starts GitHub math: each special character gets a
    backslash and every run of white space containing a line break becomes one space. Not valid
    UTF-8 is shown escaped (``files.display_text``).
    """
    one_line = re.sub(r"\s*[\r\n]+\s*", " ", display_text(str(text)))
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), one_line)


def markdown_code(text: Any) -> str:
    """User text (a folder name) as a Markdown code span on one line: literal inside, fenced with
    more backticks than it holds in a row, so a backtick in it cannot close the span."""
    one_line = re.sub(r"\s*[\r\n]+\s*", " ", display_text(str(text)))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one_line)), default=0) + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def html_text(text: Any) -> str:
    """User text as literal HTML: escaped (``<``, ``&``, quotes), not valid UTF-8 shown escaped."""
    return html.escape(display_text(str(text)))


def url(href: str) -> str:
    """A relative link as a URL: spaces, ``#``, ``?`` and non-ASCII in folder names percent-encoded."""
    return urllib.parse.quote(display_text(href), safe="/:")

NOT_AVAILABLE = "n/a"


def pct(value: float | None, std: float | None = None) -> str:
    """A fraction as percent with two decimals ("83.94"), with " ± 0.89" when ``std`` is finite.

    None and NaN print as "n/a" (a metric a run did not record, the std of a single seed).
    """
    if value is None or not np.isfinite(value):
        return NOT_AVAILABLE
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None and np.isfinite(std) else "")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over seeds; the std is NaN for one value.

    Raises ValueError on no values: a mean over nothing is a bug upstream, not a number.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


@dataclass(frozen=True)
class Link:
    """A cell (or part of one) that points to a file: ``[text](href)`` / ``<a href>``."""

    text: str
    href: str


Cell = str | Link | tuple[Link, ...]


@dataclass
class Table:
    """Columns, rows of cells, and per row a kind the page styles: "" (plain), "mean" (a study's
    headline, bold) or "ref" (a reference such as the seed's row, muted).

    ``align`` has one letter per column, "l" or "r"; by default the first column is left-aligned
    (labels) and the others right-aligned (numbers).
    """

    columns: list[str]
    rows: list[list[Cell]]
    kinds: list[str] = field(default_factory=list)
    align: str = ""

    def __post_init__(self) -> None:
        if not self.kinds:
            self.kinds = [""] * len(self.rows)
        if not self.align:
            self.align = "l" + "r" * (len(self.columns) - 1)
        if len(self.align) != len(self.columns) or set(self.align) - {"l", "r"}:
            raise ValueError(f"align needs one of 'l'/'r' per column ({len(self.columns)}), got {self.align!r}")
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.columns)]
        if bad or len(self.kinds) != len(self.rows):
            raise ValueError(f"every row needs {len(self.columns)} cells and one kind; rows {bad} do not")

    def markdown(self) -> str:
        rule = "|" + "|".join("---" if a == "l" else "---:" for a in self.align) + "|"
        lines = ["| " + " | ".join(markdown_text(c) for c in self.columns) + " |", rule]
        for row, kind in zip(self.rows, self.kinds):
            cells = [_markdown_cell(c) for c in row]
            cells = [f"**{c}**" if kind == "mean" and c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th{self._cls(i)}>{html_text(c)}</th>" for i, c in enumerate(self.columns))
        body = "".join(f'<tr class="{k}">' + "".join(f"<td{self._cls(i)}>{_html_cell(c)}</td>"
                                                     for i, c in enumerate(row)) + "</tr>"
                       for row, k in zip(self.rows, self.kinds))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _cls(self, column: int) -> str:
        """Only alignment that differs from the stylesheet's default (first left, rest right) is marked."""
        default = "l" if column == 0 else "r"
        return "" if self.align[column] == default else f' class="{self.align[column]}"'


def _links(cell: Cell) -> tuple[Link, ...]:
    return (cell,) if isinstance(cell, Link) else tuple(cell)


def _markdown_cell(cell: Cell) -> str:
    if isinstance(cell, str):
        return markdown_text(cell)
    return ", ".join(markdown_link(link) for link in _links(cell))


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, str):
        return html_text(cell)
    return ", ".join(html_link(link) for link in _links(cell))


def markdown_link(link: Link) -> str:
    """``[text](href)`` with the text literal and the href a URL."""
    return f"[{markdown_text(link.text)}]({url(link.href)})"


def html_link(link: Link) -> str:
    """``<a href>`` with the text literal and the href a URL."""
    return f'<a href="{html.escape(url(link.href))}">{html_text(link.text)}</a>'


# ----------------------------------------------------------------------------------------------
# The tables of a study's evaluations: notebook 03, summary.md and index.html show the same ones

CLUSTERING_COLUMNS = ["run", "NMI", "AMI", "ARI", "ACC"]


# The second stage's rows (python -m sclib refine), under Self-Classifier's: refine/eval.json key, label.
SECOND_STAGE = (("scored", "Self-Classifier + neighbour consistency"), ("self_label", "+ self-labelling"))


def second_stage_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, tuple[float, float]], int]]:
    """Per second-stage step that every seed ran (and did not skip): its label, each metric's mean and
    std over seeds (fractions), and the seeds counted. ``records`` are the seeds' refine/eval.json."""
    rows = []
    for key, label in SECOND_STAGE:
        steps = [r.get(key) for r in records]
        if not records or any(s is None or s.get("skipped") for s in steps):
            continue
        rows.append((label, {m: mean_std([s[m] for s in steps]) for m in seed_report.METRICS}, len(steps)))
    return rows


def clustering_table(evaluations: Sequence[Evaluation], dataset: str,
                     second_stage: Sequence[dict[str, Any]] = ()) -> Table:
    """Each seed's scored head, their mean ± std, the second stage's rows where every seed has one
    (``second_stage``: the seeds' refine/eval.json), the k-means baselines (mean over seeds) and the
    seed report's Table 1 row (or its stand-in), in percent."""
    metrics = seed_report.METRICS
    rows: list[list[Cell]] = [[f"seed {e.seed}", *(pct(e.scored[m]) for m in metrics)] for e in evaluations]
    kinds = [""] * len(rows)
    if len(evaluations) > 1:
        rows.append([f"mean ± std over {len(evaluations)} seeds",
                     *(pct(*mean_std([e.scored[m] for e in evaluations])) for m in metrics)])
        kinds.append("mean")
    if len(second_stage) == len(evaluations):
        for label, values, seeds in second_stage_rows(second_stage):
            rows.append([f"{label} ({seeds} seeds)", *(pct(*values[m]) for m in metrics)])
            kinds.append("mean")
    for key, label in BASELINES:
        values = [getattr(e, key) for e in evaluations]  # a skipped baseline's metrics are None
        rows.append([label + (" (mean over seeds)" if len(values) > 1 else ""),
                     *(pct(float(np.mean(np.array([v[m] for v in values], dtype=float)))) for m in metrics)])
        kinds.append("ref")
    found = seed_report.table1_row(dataset)
    if found is not None:
        label, percent = found
        rows.append([label, *(f"{percent[m]:.2f}" for m in metrics)])
        kinds.append("ref")
    return Table(CLUSTERING_COLUMNS, rows, kinds)


def heads_table(evaluations: Sequence[Evaluation]) -> Table:
    """Every head, mean over seeds: only the scored head has a meaningful ACC."""
    first = evaluations[0]
    rows: list[list[Cell]] = []
    for i, h in enumerate(first.heads):
        per_seed = [e.heads[i] for e in evaluations]
        mark = " (scored)" if i == first.scored_head else ""
        rows.append([f"head {i}: {h['head_size']} clusters{mark}",
                     f"{np.mean([p['clusters_used'] for p in per_seed]):.1f}",
                     *(pct(float(np.mean([p[m] for p in per_seed]))) for m in seed_report.METRICS)])
    return Table(["head", "clusters used", "NMI", "AMI", "ARI", "ACC"], rows)


def probe_summary(probes) -> dict[str, dict[str, float]]:
    """Per probe, top-1 / top-3 at the newest probed epoch: mean and std over seeds (NaN for one
    seed), and the linear probe's training epochs where probe.csv records them."""
    last = probes[probes["epoch"] == probes["epoch"].max()]
    out = {}
    for name, group in last.groupby("probe"):
        out[str(name)] = {"epoch": int(group["epoch"].iloc[0]), "seeds": len(group)}
        for k in ("top1", "top3"):
            out[str(name)][k], out[str(name)][f"{k}_std"] = mean_std(group[k].tolist())
        if "probe_epochs" in group:
            out[str(name)]["probe_epochs"] = int(group["probe_epochs"].iloc[0])
        if "k" in group and group["k"].notna().all():  # the neighbours that voted (fewer on a tiny split)
            out[str(name)]["k"] = int(group["k"].min())
    return out
