"""The study's front page: ``results/index.html`` and its Markdown twin ``results/README.md``.

One page for a reader of the reproducibility study: the seed report's Table 1 with our mean ± std
over seeds beside each of its rows, how every row was obtained (recipe, network, device, training
minutes, seeds, where the data came from), the data sets not run and why, the ablation grids,
and one figure of every data set's ACC against the seed's. Everything is read from the committed
study folders (``results/<name>/study.json``, ``run/seed<N>/``, ``sweep/``), so a new study folder
(CIFAR-10 from a GPU machine, say) shows up on the next ``python -m sclib front``. The
repository README quotes the same table between two markers, written by the same function.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sclib import seed_report
from sclib.report import plots
from sclib.report.ablations import ablation_rows, ablation_table
from sclib.report.plots import save_figure
from sclib.report.summary import (
    STYLESHEET,
    Study,
    core_minutes,
    load_study,
    run_links,
    second_stage,
    second_stage_minutes,
    training_minutes,
    write_stylesheet,
)
from sclib.report.tables import (
    BASELINES,
    SECOND_STAGE,
    Link,
    Table,
    html_link,
    html_text,
    markdown_code,
    markdown_link,
    markdown_text,
    mean_std,
    pct,
    second_stage_rows,
)
from sclib.run.config import ConfigError
from sclib.run.files import UnreadableFileError, display_text, read_json, read_text, write_csv, write_text

# Why a data set of the seed's Table 1 has no study folder yet (shown until one appears).
NOT_RUN = {
    "stl10": "not run: the STL-10 pixels are not reachable from this project's machines",
}
NOT_RUN_YET = "not run yet"
NAMES = {**seed_report.TABLE1_NAMES, "fashion_mnist": "Fashion-MNIST", "digits": "digits (scikit-learn)",
         "imagefolder": "image folder"}
NETWORKS = {"small": "small CNN", "resnet18": "ResNet-18", "stride2_stem": "small CNN, stride-2 stem",
            "small_resnet": "small ResNet", "wide_late": "wide-late CNN", "airbench": "airbench-style CNN"}
SEED_RUN = f"seed report: ResNet-18, {seed_report.TABLE1_EPOCHS} epochs"
FIGURE = "figures/acc_vs_seed.png"
CAPTION = ("ACC on the test split, percent. Dots: this study's seeds, with their mean and a bar of one standard "
           f"deviation; red diamonds: the seed report's Table 1 (ResNet-18, {seed_report.TABLE1_EPOCHS} epochs). "
           "Our rows are short CPU recipes unless the table says otherwise: the comparison shows where the method "
           "stands on a small budget, not a like-for-like reproduction.")
GENERATOR = '<meta name="generator" content="sclib front">'
ALT = "ACC per data set against the seed report"
MARK_BEGIN = "<!-- results table: written by `python -m sclib front` from results/; do not edit by hand -->"
MARK_END = "<!-- end of results table -->"
ABLATION_NOTE = ("Percent, mean ± std over seeds; the last column is the seed's ACC for the same variant on "
                 f"{seed_report.TABLE2_NAME} after {seed_report.TABLE2_EPOCHS} epochs.")
COLUMNS = ["data set", "run", "NMI", "AMI", "ARI", "ACC", "seeds", "training per seed", "data", "files"]


@dataclass
class Entry:
    """One evaluated study folder under the results folder."""

    folder: str  # its name, relative to the results folder
    study: Study

    @property
    def dataset(self) -> str:
        return self.study.dataset

    def scored(self, metric: str) -> list[float]:
        """The scored head's ``metric`` of every seed (fractions)."""
        return [float(r.scored[metric]) for r in self.study.reports]


def find_studies(results: str | Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Evaluated study folders (those with a study.json), and (folder, why) for the others."""
    entries, skipped = [], []
    for info in sorted(Path(results).glob("*/study.json")):
        study = load_study(info.parent)
        if study is None or not study.reports:
            skipped.append((info.parent.name, "holds no evaluated runs (no run/seed<N>/eval.json)"))
        else:
            entries.append(Entry(info.parent.name, study))
    return entries, skipped


def _order(entries: list[Entry]) -> list[str]:
    """Data sets in the seed's Table 1 order, then the others this study ran, by name."""
    ours = sorted({e.dataset for e in entries} - set(seed_report.TABLE1))
    return [*seed_report.TABLE1, *ours]


def _name(dataset: str) -> str:
    return NAMES.get(dataset, dataset)


def _run(entry: Entry) -> str:
    cfg = entry.study.runs[0][0]
    split = entry.study.reports[0].split
    return (f"{cfg.preset}: {NETWORKS.get(cfg.backbone, cfg.backbone)}, {cfg.image_size} px, {cfg.epochs} epochs"
            + ("" if split == "test" else f" (scored on the {split} split)"))


def _device(entry: Entry) -> str:
    prov = read_json(entry.study.runs[0][1].config, kind=dict).get("provenance", {})
    world = int(prov.get("world_size", 1))
    return str(prov.get("device", "unknown")) + (f" x {world}" if world > 1 else "")


def training_cell(entry: Entry) -> str:
    """The mean training cost per seed: "N core-min (M min) on cpu" where CPU time was recorded,
    else "M min on <device>" (runs from before history.csv had ``cpu_seconds``, and GPU runs)."""
    minutes, _ = mean_std(training_minutes(entry.study))
    cores = core_minutes(entry.study)
    device = _device(entry)
    if cores is not None and device.startswith("cpu"):
        return f"{mean_std(cores)[0]:.1f} core-min ({minutes:.1f} min) on {device}"
    return f"{minutes:.1f} min on {device}"


def data_cell(note: str) -> str:
    """The study note's first clause (up to the first ";"): where the data came from.

    A whole note (data, recipe, precision, threads, load) made every row several lines tall; the
    study's summary.md and index.html keep it whole.
    """
    return note.split(";", 1)[0].strip()


def results_table(entries: list[Entry], prefix: str = "") -> Table:
    """Table 1 beside ours: per data set our studies (mean ± std over seeds) and the seed's row (muted).

    ``prefix`` is the results folder as the page's links see it ("" on the front page,
    "results/" in the repository README).
    """
    rows, kinds = [], []
    for dataset in _order(entries):
        for entry in (e for e in entries if e.dataset == dataset):
            rows.append([_name(dataset), _run(entry), *(pct(*mean_std(entry.scored(m))) for m in seed_report.METRICS),
                         str(len(entry.study.reports)), training_cell(entry),
                         data_cell(str(entry.study.info.get("note") or "")),
                         _study_links(entry, prefix)])
            kinds.append("")
            records = second_stage(entry.study.runs)
            for (label, values, seeds), (key, _) in zip(second_stage_rows(records), SECOND_STAGE):
                rows.append([_name(dataset), f"{_run(entry)} {label.removeprefix('Self-Classifier ')}",
                             *(pct(*values[m]) for m in seed_report.METRICS), str(seeds),
                             f"+ {second_stage_minutes(entry.study, key):.1f} core-min", "", ""])
                kinds.append("")
        if dataset in seed_report.TABLE1:
            seed = seed_report.as_fractions(seed_report.TABLE1[dataset])
            studied = any(e.dataset == dataset for e in entries)
            rows.append([_name(dataset), SEED_RUN, *(pct(seed[m]) for m in seed_report.METRICS), "", "on a GPU",
                         "" if studied else NOT_RUN.get(dataset, NOT_RUN_YET), ""])
            kinds.append("ref")
    return Table(COLUMNS, rows, kinds, align="llrrrrrrll")


def _study_links(entry: Entry, prefix: str) -> tuple[Link, ...]:
    """The study's pages that exist (a study stopped by a failing notebook has no summary.md)."""
    pages = (("study", "index.html"), ("summary", "summary.md"), ("Table 2", "06_ablations.html"))
    return tuple(Link(text, f"{prefix}{entry.folder}/{name}") for text, name in pages
                 if (entry.study.out / name).exists())


def not_run(entries: list[Entry]) -> list[tuple[str, str]]:
    """(data set, reason) for every row of the seed's Table 1 without a study here."""
    studied = {e.dataset for e in entries}
    return [(_name(d), NOT_RUN.get(d, NOT_RUN_YET)) for d in seed_report.TABLE1 if d not in studied]


@dataclass
class Ablations:
    """One study's ablation sweep, tabulated like the seed's Table 2."""

    entry: Entry
    table: Table
    epochs: int
    links: list[Link]


def ablations(entries: list[Entry], prefix: str = "") -> list[Ablations]:
    found = []
    for entry in entries:
        sweep = entry.study.out / "sweep"
        if not (sweep / "sweep.json").exists():
            continue
        frame = ablation_table(sweep)
        base = f"{prefix}{entry.folder}"
        links = [Link("notebook 06 (page)", f"{base}/06_ablations.html")] if (
            entry.study.out / "06_ablations.html").exists() else []
        links += [Link(f"figure: {p.stem.replace('_', ' ')}", f"{base}/sweep/figures/{p.name}")
                  for p in sorted((sweep / "figures").glob("*.png"))]
        links.append(Link("sweep.json (the grid)", f"{base}/sweep/sweep.json"))
        found.append(Ablations(entry, ablation_rows(frame, link=lambda folder, b=base: f"{b}/sweep/{folder}/"),
                               int(frame["epochs"].max()), links))
    return found


def acc_frame(entries: list[Entry]) -> pd.DataFrame:
    """Long form, one row per seed: ``dataset`` (display name), ``seed``, ``acc`` (fraction)."""
    rows = [{"dataset": _name(e.dataset) + ("" if len([x for x in entries if x.dataset == e.dataset]) == 1
                                            else f" ({display_text(e.folder)})"), "seed": cfg.seed, "acc": acc}
            for e in entries for (cfg, _), acc in zip(e.study.runs, e.scored("acc"))]
    return pd.DataFrame(rows, columns=["dataset", "seed", "acc"])


def acc_figure(entries: list[Entry]):
    """Every data set's ACC against the seed's Table 1 row (``plots.acc_against_seed_report``)."""
    ours = acc_frame(entries)
    order = [*dict.fromkeys([*(_name(d) for d in seed_report.TABLE1), *ours["dataset"]])]
    seed = {_name(d): row["acc"] / 100 for d, row in seed_report.TABLE1.items()}
    return plots.acc_against_seed_report(ours, seed, order=order)


# ----------------------------------------------------------------------------------------------
# The pages


def _file_lines(entries: list[Entry], prefix: str) -> list[tuple[str, list[Link]]]:
    """Per study, the files behind its row (config, history, metrics, eval, probe of every seed)."""
    return [(f"{_name(e.dataset)} ({e.folder}/)", [Link(label, f"{prefix}{e.folder}/{path}")
                                                    for label, path in run_links(e.study)]) for e in entries]


INTRO = (f"Clustering of the scored head on each data set's test split, in percent: mean ± standard deviation "
         f"over seeds, beside the seed report's Table 1 ({SEED_RUN.split(': ', 1)[1]}, on a GPU). A "
         "row says how it was obtained: the recipe and network, the device, the training time per seed (the sum of "
         "its epoch times), the number of seeds and where the data came from.")
REGENERATE = ("Regenerate this page (and the README's results table) from the study folders with "
              "`python -m sclib front`; `python -m sclib study --results` does it after each study.")


def markdown_page(entries: list[Entry], skipped: list[tuple[str, str]]) -> str:
    lines = ["# Self-Classifier on small image data sets: the results", "", INTRO, "",
             results_table(entries).markdown(), f"![{ALT}]({FIGURE})", "", f"*{CAPTION}*", ""]
    lines += ["## Data sets not run", ""] + [f"- **{name}**: {why}" for name, why in not_run(entries)]
    lines += [f"- {markdown_code(folder + '/')}: {why}" for folder, why in skipped] + [""]
    for ab in ablations(entries):
        lines += [f"## Ablations on {_name(ab.entry.dataset)} (the seed's Table 2 grid, {ab.epochs} epochs)", "",
                  ABLATION_NOTE, "", ab.table.markdown(), ", ".join(markdown_link(link) for link in ab.links), ""]
    lines += ["## Run files", ""]
    lines += [f"- {markdown_text(what)}: " + ", ".join(markdown_link(link) for link in links)
              for what, links in _file_lines(entries, "")]
    lines += ["", REGENERATE, ""]
    return "\n".join(lines)


def html_page(entries: list[Entry], skipped: list[tuple[str, str]]) -> str:
    def links(items: list[Link]) -> str:
        return ", ".join(html_link(x) for x in items)

    title = "Self-Classifier on small image data sets: the results"
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(INTRO)}</p>", results_table(entries).html(),
             f'<figure class="wide"><a href="{FIGURE}"><img src="{FIGURE}" alt="{ALT}"></a>'
             f"<figcaption>{html.escape(CAPTION)}</figcaption></figure>", "<h2>Data sets not run</h2>", "<ul>"]
    parts += [f"<li><strong>{html.escape(n)}</strong>: {html.escape(w)}</li>" for n, w in not_run(entries)]
    parts += [f"<li><code>{html_text(f)}/</code>: {html.escape(w)}</li>" for f, w in skipped] + ["</ul>"]
    for ab in ablations(entries):
        parts += [f"<h2>Ablations on {html.escape(_name(ab.entry.dataset))} (the seed's Table 2 grid, "
                  f"{ab.epochs} epochs)</h2>",
                  f"<p>{ABLATION_NOTE}</p>", ab.table.html(), f"<p>{links(ab.links)}</p>"]
    parts += ["<h2>Run files</h2>", "<ul>"]
    parts += [f"<li>{html_text(what)}: {links(items)}</li>" for what, items in _file_lines(entries, "")]
    regenerate = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(REGENERATE))
    parts += ["</ul>", f'<p>{regenerate} <a href="README.md">README.md</a> is this page as Markdown.</p>']
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f'{GENERATOR}\n<link rel="stylesheet" href="{STYLESHEET}"></head><body class="front">\n' + "\n".join(parts)
            + "\n</body></html>\n")


def is_front_page(path: str | Path) -> bool:
    """Whether ``path`` is a front page this module wrote (so a new study may rewrite it)."""
    path = Path(path)
    return path.exists() and GENERATOR in path.read_text(errors="replace")


def readme_block(entries: list[Entry]) -> str:
    """The repository README's results table, with links from the repository root."""
    return f"{MARK_BEGIN}\n{results_table(entries, prefix='results/').markdown()}{MARK_END}"


def _readme_text(readme: Path) -> str:
    try:
        return read_text(readme, "--readme", "name the README whose results table to rewrite")
    except UnreadableFileError as err:
        raise ConfigError(str(err)) from None


def _has_markers(readme: Path) -> bool:
    text = _readme_text(readme) if readme.exists() else ""
    return MARK_BEGIN in text and MARK_END in text


def update_readme(readme: str | Path, entries: list[Entry]) -> Path:
    """Replace the table between the README's two markers (rewritten only when it changed)."""
    readme = Path(readme)
    text = _readme_text(readme)
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    new = head + readme_block(entries) + tail
    return write_text(readme, new) if new != text else readme


# Every committed number in one long table: pandas.read_csv("results/results.csv") in one line.
TIDY = "results.csv"


def tidy_rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """One row per study, seed, stage, head and metric (value a fraction): the scored and every
    other head of Self-Classifier, the k-means baselines, and the second stage where it ran."""
    rows = []
    for entry in entries:
        cfg = entry.study.runs[0][0]
        base = {"dataset": entry.dataset, "study": entry.folder, "recipe": _run(entry), "preset": cfg.preset,
                "backbone": cfg.backbone, "epochs": cfg.epochs}
        refined = {c.seed: read_json(p.refine_eval) for c, p in entry.study.runs if p.refine_eval.exists()}
        for report in entry.study.reports:
            stages = [("Self-Classifier", f"head {h['head']} ({h['head_size']} clusters)"
                       + (" scored" if h["head"] == report.scored_head else ""), h) for h in report.heads]
            stages += [(label, "", getattr(report, key)) for key, label in BASELINES]
            record = refined.get(report.seed, {})
            stages += [(label, "scored", record[key]) for key, label in SECOND_STAGE
                       if isinstance(record.get(key), dict) and not record[key].get("skipped")]
            for stage, head, metrics in stages:
                rows += [{**base, "seed": report.seed, "split": report.split, "stage": stage, "head": head,
                          "metric": m, "value": metrics[m]} for m in seed_report.METRICS
                         if metrics.get(m) is not None]
    return rows


def write_front(results: str | Path = "results", readme: str | Path | None = None) -> list[Path]:
    """Write ``index.html``, ``README.md``, the figure and ``style.css`` into ``results``, and the
    results table of ``readme`` (default: the README beside ``results``, if it has the markers).

    Raises FileNotFoundError when ``results`` holds no evaluated study (an empty front page would
    look like a result) and ConfigError when a ``readme`` given has no markers; both before
    anything is written.
    """
    results = Path(results)
    entries, skipped = find_studies(results)
    if not entries:
        raise FileNotFoundError(f"{results} holds no evaluated study folder (<name>/study.json with run/seed<N>/"
                                "eval.json); run one first: python -m sclib study --results")
    if readme is not None and not Path(readme).exists():
        raise FileNotFoundError(f"--readme {readme} does not exist; name the README whose results table to rewrite")
    if readme is not None and not _has_markers(Path(readme)):
        raise ConfigError(f"{readme} has no results table to update: put the lines {MARK_BEGIN!r} and "
                          f"{MARK_END!r} where it goes")
    readme = Path(readme) if readme is not None else results.resolve().parent / "README.md"
    written = save_figure(acc_figure(entries), results / Path(FIGURE).parent, Path(FIGURE).stem)
    written += [write_stylesheet(results), write_text(results / "index.html", html_page(entries, skipped)),
                write_text(results / "README.md", markdown_page(entries, skipped)),
                write_csv(results / TIDY, tidy_rows(entries))]
    if _has_markers(readme):
        written.append(update_readme(readme, entries))
    return written
