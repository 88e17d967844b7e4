"""The study's front page: ``summary.md`` and ``index.html`` from the files the runs wrote.

Both say the same things from one table model: this study's seeds next to the seed report's
Table 1 row, every head, the probes, every figure with a caption, and where the numbers come
from (recipe, commit, versions, device, wall time), with links to the run files.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib import seed_report
from sclib.eval.checks import evaluation_warnings
from sclib.report.tables import (
    Evaluation,
    Link,
    Table,
    clustering_table,
    heads_table,
    html_link,
    html_text,
    markdown_link,
    markdown_text,
    pct,
    probe_summary,
)
from sclib.run.config import Config, load_config
from sclib.run.files import read_json, read_record, write_text
from sclib.run.paths import ALL_NOTEBOOKS, RUN_GROUP, RunPaths, folder_seed, run_folders
from sclib.run.records import KNN_K, read_evaluation, read_history, read_metrics, read_probe

STYLESHEET = "style.css"
# Provenance entries that hold what a user typed (--note, the training flags): escaped in Markdown.
USER_TEXT = ("note", "overrides")

# What each figure shows, by its stable file name.
CAPTIONS = {
    "fig1_training": "Fig. 1. Training: loss, learning rate, clusters the scored head uses (dashed: the number of "
                     "classes) and throughput, per epoch: the mean over seeds with a band of one standard "
                     "deviation, each seed as a thin line.",
    "fig2_probe": "Fig. 2. Linear and kNN probes on frozen backbone features against pre-training epochs "
                  "(mean over seeds, band: one standard deviation).",
    "confusion": "True class against the matched cluster of the scored head (Hungarian matching), coloured by the "
                 "fraction of each true class.",
    "fig3_clusters_best": "Fig. 3, top. Eval images of the purest clusters, titled with their matched class "
                          "and purity.",
    "fig3_clusters_worst": "Fig. 3, bottom. Eval images of the least pure clusters.",
    "fig4a_tsne": "Fig. 4a. t-SNE of the backbone features of the eval split, coloured by true class.",
    "fig4a_tsne_clusters": "t-SNE of the same features, coloured by the scored head's cluster.",
    "fig4a_umap": "UMAP of the backbone features, coloured by true class.",
    "fig4a_umap_clusters": "UMAP of the backbone features, coloured by the scored head's cluster.",
    "fig4b_histogram": "Fig. 4b. Eval images per predicted cluster against the uniform count (dashed).",
    "fig5_ablations": "Ablations: ACC per variant (mean over seeds, bars: one standard deviation); the base recipe "
                      "is highlighted.",
    "fig5_ablations_grid": "Ablations: every metric per variant (mean ± std over seeds, percent), coloured by the "
                           "difference from the base recipe in points (red better, blue worse).",
    "fig5_ablations_nmi": "Ablations: NMI per variant.",
}

CSS = """\
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:64em;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2} a{color:#1f5fa8}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
tr.ref td{color:#555;font-style:italic} tr.mean td{font-weight:600}
.note{background:#f6f8fa;border-left:4px solid #9ab;padding:.5em .8em}
.warn{background:#fff3cd;border-left:4px solid #e0b040;padding:.5em .8em}
figure{display:inline-block;vertical-align:top;width:30em;max-width:100%;margin:.6em}
figure img{max-width:100%} figcaption{font-size:.88em;color:#444}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em} dt{font-weight:600}
img{max-width:100%}
td.l,th.l{text-align:left} td.r,th.r{text-align:right}
.nav{font-size:.9em}
body.front{max-width:84em} body.front table{font-size:.86em} body.front td:not(.l):not(:first-child){white-space:nowrap}
body.front td:nth-child(2){min-width:10em}
figure.wide{display:block;width:44em}
/* notebook pages (nbconvert's basic template) */
.input_area pre,.output_area pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
.output_area pre,.note,.warn{white-space:pre-wrap;overflow-wrap:anywhere}
.output_stderr pre{background:#fdf2f2}
.output_area table{font-size:.85em}
.anchor-link{display:none}
.highlight .k,.highlight .kn,.highlight .kc{color:#a626a4}.highlight .s,.highlight .s1,.highlight .s2{color:#50a14f}
.highlight .c1,.highlight .c{color:#888;font-style:italic}.highlight .mi,.highlight .mf{color:#986801}
.highlight .nf,.highlight .nb{color:#4078f2}
"""


def write_stylesheet(folder: Path) -> Path:
    """The one stylesheet every page of a study links to."""
    target = Path(folder) / STYLESHEET
    if not target.exists() or target.read_text() != CSS:
        write_text(target, CSS)
    return target


# ----------------------------------------------------------------------------------------------
# What a study holds


@dataclass
class Study:
    out: Path
    info: dict[str, Any]          # study.json
    runs: list[tuple[Config, RunPaths]]
    reports: list[Evaluation]  # eval.json per run (those that have one)

    @property
    def dataset(self) -> str:
        return self.runs[0][0].dataset

    @property
    def group(self) -> Path:
        return self.out / self.info.get("run_dir", RUN_GROUP)


def load_study(out: Path) -> Study | None:
    """The study in ``out``: its study.json and the seed runs it lists (every seed run of its group
    when study.json lists none), with their eval.json; None when it holds no runs.

    Only the listed seeds: a seed folder left from an earlier study in the same folder must not
    join this one's mean ± std. Damaged files raise UnreadableFileError naming them.
    """
    out = Path(out)
    fix = "rerun the study (it resumes) to write it again"
    info = read_record(out / "study.json", (), fix) if (out / "study.json").exists() else {}
    try:
        folders = run_folders(out / str(info.get("run_dir", RUN_GROUP)))
    except FileNotFoundError:
        return None
    seeds = info.get("seeds")
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        folders = [f for f in folders if folder_seed(f) in seeds or folder_seed(f) is None]
        if not folders:
            return None
    runs = [(load_config(RunPaths(f).config), RunPaths(f)) for f in folders]
    reports = [read_evaluation(p, cfg.seed) for cfg, p in runs if p.eval.exists()]
    return Study(out, info, runs, reports)


def second_stage(runs: list[tuple[Config, RunPaths]]) -> list[dict[str, Any]]:
    """Every seed's refine/eval.json (python -m sclib refine), or nothing unless every seed has one."""
    records = [read_json(p.refine_eval) for _, p in runs if p.refine_eval.exists()]
    return records if len(records) == len(runs) else []


def second_stage_minutes(study: Study, key: str) -> float:
    """Mean CPU minutes per seed of a second-stage step (``scored``: neighbour consistency; ``self_label``)."""
    records = second_stage(study.runs)
    spent = [r["cpu_seconds"] if key == "scored" else r[key]["cpu_seconds"] for r in records]
    return float(sum(spent)) / max(len(spent), 1) / 60


def probe_table(study: Study) -> Table | None:
    import pandas as pd

    frames = [read_probe(p).assign(seed=cfg.seed) for cfg, p in study.runs if p.probe.exists()]
    if not frames:
        return None
    rows = []
    for name, s in probe_summary(pd.concat(frames, ignore_index=True)).items():
        epochs = s.get("probe_epochs") if name == "linear" else None
        voters = f" ({s.get('k', KNN_K)} neighbours)" if name == "knn" else ""
        what = f"{name}" + (f" ({epochs} epochs)" if epochs else voters)
        rows.append([what, str(s["epoch"]), str(s["seeds"]),
                     pct(s["top1"], s["top1_std"]), pct(s["top3"], s["top3_std"])])
    return Table(["probe", "pre-training epoch", "seeds", "top-1", "top-3"], rows, [""] * len(rows))


def table1() -> Table:
    rows = [[seed_report.TABLE1_NAMES[k], *(f"{row[m]:.2f}" for m in seed_report.METRICS)]
            for k, row in seed_report.TABLE1.items()]
    return Table(["data set", "NMI", "AMI", "ARI", "ACC"], rows, [""] * len(rows))


def provenance(study: Study, times: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs: what produced the numbers."""
    cfg = study.runs[0][0]
    provs = [read_json(paths.config, kind=dict).get("provenance", {}) for _, paths in study.runs]
    prov = provs[0]
    resumed = [r for p in provs for r in p.get("resumed", [])]
    starts = provs + resumed  # every run and every resume of every seed
    dirty = any(p.get("git_dirty") for p in starts)
    started = min((p["started"] for p in provs if p.get("started")), default="?")
    finished = max((p["finished"] for p in provs if p.get("finished")), default="?")
    pairs = [
        ("recipe", f"{cfg.preset} ({cfg.backbone}, {cfg.epochs} epochs, batch {cfg.batch_size}, image size "
                   f"{cfg.image_size}, heads {cfg.heads})"),
        ("seeds", ", ".join(str(c.seed) for c, _ in study.runs)),
        ("eval split", study.reports[0].split if study.reports else "not evaluated yet"),
        ("device", f"{prov.get('device', 'unknown')} (world size {prov.get('world_size', 1)})"),
        ("machine", machine_line(starts)),
        ("training time", training_line(study)),
        ("code", f"sclib {prov.get('sclib', '?')}, commit {commits_line(study, provs)}"
                 + (" with uncommitted changes" if dirty else "")),
        ("versions", f"python {prov.get('python')}, torch {prov.get('torch')}, torchvision {prov.get('torchvision')}, "
                     f"numpy {prov.get('numpy')}, scikit-learn {prov.get('scikit_learn')}"),
        ("trained", f"{started} to {finished}"
                    + (f", resumed {len(resumed)} time(s)" if resumed else "")),
        ("comparison", caveat(cfg)),
    ]
    overrides = study.info.get("config_overrides") or {}
    if overrides:
        pairs.insert(1, ("overrides", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in overrides.items())))
    if study.info.get("note"):
        pairs.insert(3, ("note", study.info["note"]))
    if times:
        pairs.append(("report steps", ", ".join(f"{k} {v:.0f} s" for k, v in times.items())))
    return pairs


def commits_line(study: Study, provs: list[dict[str, Any]]) -> str:
    """The commits that trained the study; where there are several, which seed (or resume) each made."""
    made: dict[str, list[str]] = {}
    for (cfg, _), prov in zip(study.runs, provs):
        made.setdefault(prov.get("git_commit") or "unknown", []).append(f"seed {cfg.seed}")
        for resume in prov.get("resumed", []):
            made.setdefault(resume.get("git_commit") or "unknown", []).append(f"seed {cfg.seed} resumed")
    if len(made) == 1:
        return next(iter(made))
    return ", ".join(f"{commit} ({', '.join(what)})" for commit, what in sorted(made.items()))


def machine_line(starts: list[dict[str, Any]]) -> str:
    """The CPU models and thread counts the runs (and resumes) trained with: the numbers depend on both.

    Runs made before provenance recorded them say "not recorded".
    """
    machines = sorted({f"{p['cpu_model']}, {p['threads']} thread{'s' if p['threads'] != 1 else ''}"
                       for p in starts if p.get("cpu_model") and p.get("threads")})
    return "; ".join(machines) if machines else "not recorded"


def training_minutes(study: Study, column: str = "seconds") -> list[float]:
    """Per seed, the minutes its epochs took: the sum of history.csv's ``column`` / 60 (0 without it).

    ``seconds`` is wall time; ``cpu_seconds`` the process's user + system CPU time (core-seconds,
    recorded since the CIFAR budget became core-minutes; older runs lack it). Epoch times leave
    out start-up, evaluation and probes: the cost of training, comparable across machines that
    report differently.
    """
    import pandas as pd

    minutes = []
    for cfg, paths in study.runs:
        finished = paths.metrics.exists()  # a finished run's history holds every epoch, or it was cut
        history = read_history(paths, cfg.epochs if finished else None) if paths.history.exists() else pd.DataFrame()
        minutes.append(float(history[column].sum()) / 60 if column in history else 0.0)
    return minutes


def core_minutes(study: Study) -> list[float] | None:
    """Per seed, the core-minutes (CPU time) its epochs took; None unless every seed recorded them."""
    minutes = training_minutes(study, "cpu_seconds")
    return minutes if minutes and all(m > 0 for m in minutes) else None


def training_line(study: Study) -> str:
    """Per-seed training cost for the summary: wall minutes, and core-minutes where recorded."""
    wall = ", ".join(f"{m:.1f}" for m in training_minutes(study)) + " minutes per seed (sum of epoch times)"
    cores = core_minutes(study)
    if cores is None:
        return wall
    return ", ".join(f"{m:.1f}" for m in cores) + f" core-minutes per seed (CPU time); {wall}"


def run_links(study: Study) -> list[tuple[str, str]]:
    """(label, relative path) of the files behind the numbers, per seed."""
    links = []
    for cfg, paths in study.runs:
        for name in ("config", "history", "metrics", "eval", "probe"):
            path = getattr(paths, name)
            if path.exists():
                links.append((f"seed {cfg.seed}: {path.name}", os.path.relpath(path, study.out)))
    return links


def figures(out: Path) -> list[Path]:
    found = [p for p in sorted(out.rglob("figures/*.png")) if "checkpoints" not in p.parts]
    order = {stem: i for i, stem in enumerate(CAPTIONS)}
    return sorted(found, key=lambda p: (order.get(p.stem, len(order)), p.as_posix()))


# ----------------------------------------------------------------------------------------------
# The two pages


def write_summary(out: Path, times: dict[str, float] | None = None) -> Path:
    """``summary.md``: this study's seeds next to the seed's Table 1 row, heads, probes, provenance."""
    study = load_study(out)
    if study is None or not study.reports:
        raise FileNotFoundError(f"{out} holds no evaluated runs to summarise")
    lines = [f"# Self-Classifier study: {study.dataset}", ""]
    lines += [f"- **{label}**: {markdown_text(value) if label in USER_TEXT else value}"
              for label, value in provenance(study, times)]
    warnings = run_warnings(study.runs)
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    lines += ["", f"## Clustering on the {study.reports[0].split} split (percent)", "",
              clustering_table(study.reports, study.dataset, second_stage(study.runs)).markdown(),
              "## Every head (mean over seeds)", "",
              heads_table(study.reports).markdown()]
    probes = probe_table(study)
    if probes is not None:
        lines += ["## Probes on frozen backbone features (newest milestone)", "", probes.markdown()]
    lines += ["## Seed report, Table 1 (ResNet-18, 800 epochs, percent)", "", table1().markdown(), "## Run files", ""]
    lines += [f"- {markdown_link(Link(label, path))}" for label, path in run_links(study)]
    target = Path(out) / "summary.md"
    write_text(target, "\n".join(lines) + "\n")
    return target


def write_index(out: Path, failed: str | None = None) -> Path:
    """``index.html``: the summary as rendered tables, every figure with its caption, the notebooks."""
    out = Path(out)
    write_stylesheet(out)
    study = load_study(out)
    title = f"Self-Classifier study: {study.dataset}" if study else "Self-Classifier study"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if failed:
        parts.append(f'<p class="warn">Stopped at {html.escape(failed)}: its page keeps the traceback.</p>')
    if study and study.reports:
        parts.append("<dl>" + "".join(f"<dt>{html_text(k)}</dt><dd>{html_text(v)}</dd>"
                                      for k, v in provenance(study)) + "</dl>")
        warnings = run_warnings(study.runs)
        if warnings:
            parts.append('<p class="warn">' + "<br>".join(html.escape(w) for w in warnings) + "</p>")
        parts += [f"<h2>Clustering on the {html.escape(study.reports[0].split)} split (percent)</h2>",
                  clustering_table(study.reports, study.dataset, second_stage(study.runs)).html(),
                  "<h2>Every head (mean over seeds)</h2>",
                  heads_table(study.reports).html()]
        probes = probe_table(study)
        if probes is not None:
            parts += ["<h2>Probes on frozen backbone features</h2>", probes.html()]
    items = [f'<li><a href="{n}.html">{n}</a> (<a href="{n}.ipynb">notebook</a>)'
             + (" <strong>failed</strong>" if n == failed else "") + "</li>"
             for n in ALL_NOTEBOOKS if (out / f"{n}.ipynb").exists()]
    parts += ["<h2>Notebooks</h2>", f"<ul>{''.join(items) or '<li>none yet</li>'}</ul>", "<h2>Figures</h2>"]
    for path in figures(out):
        rel = html.escape(path.relative_to(out).as_posix())
        caption = CAPTIONS.get(path.stem, path.stem.replace("_", " "))
        parts.append(f'<figure><a href="{rel}"><img src="{rel}" alt="{html.escape(caption)}" loading="lazy"></a>'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if study and study.reports:
        parts += ["<h2>Seed report, Table 1 (ResNet-18, 800 epochs, percent)</h2>", table1().html(),
                  "<h2>Run files</h2>",
                  "<ul>" + "".join(f"<li>{html_link(Link(label, p))}</li>" for label, p in run_links(study))
                  + "</ul>",
                  '<p><a href="summary.md">summary.md</a> holds the same tables as Markdown.</p>']
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f'<link rel="stylesheet" href="{STYLESHEET}"></head><body>\n' + "\n".join(parts) + "\n</body></html>\n")
    target = out / "index.html"
    write_text(target, page)
    return target


def run_warnings(runs: list[tuple[Config, RunPaths]]) -> list[str]:
    """Every seed's warnings, one line each: a collapse (metrics.json, eval.json), skipped steps (eval.json).

    Read from the files, not the notebooks' state, so the summary and every notebook say the same.
    """
    lines = []
    for cfg, paths in runs:
        found = [read_metrics(paths).get("warning")] if paths.metrics.exists() else []
        if paths.eval.exists():
            found += evaluation_warnings(read_evaluation(paths, cfg.seed))
        lines += [f"seed {cfg.seed}: {w}" for w in dict.fromkeys(found) if w]
    return lines


# ----------------------------------------------------------------------------------------------
# What the numbers can be compared with


def comparable(cfg: Config) -> bool:
    """Only the seed recipe (ResNet-18, 800 epochs) can be read against Table 1."""
    return cfg.backbone == "resnet18" and cfg.epochs == seed_report.TABLE1_EPOCHS


def caveat(cfg: Config | None) -> str:
    if cfg is not None and comparable(cfg):
        return "The run follows the seed's recipe (ResNet-18, 800 epochs): its numbers are comparable with Table 1."
    what = (f"recipe '{cfg.preset}': backbone {cfg.backbone}, {cfg.epochs} epochs"
            if cfg is not None else "a shortened recipe")
    return (f"Not the seed's recipe ({what}): the Table 1 row shows what the full 800-epoch ResNet-18 reached, "
            "not a like-for-like comparison.")
