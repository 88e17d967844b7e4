"""The study runner: executes the notebooks with papermill and writes the HTML report.

``python -m sclib study`` runs notebooks 01-05 in a kernel of the current interpreter and turns
them into HTML next to an ``index.html`` and a ``summary.md`` with the seed's numbers;
``python -m sclib sweep`` runs an ablation grid (``sclib.sweep``) and then notebook 06.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib import seed as seed_report
from sclib.config import Config, ConfigError, PRESETS, coerce
from sclib.files import write_text
from sclib.report import caveat, clustering_rows, heads_rows, probe_summary, run_config
from sclib.sweep import run_sweep

STUDY_NOTEBOOKS = ("01_pretrain", "02_linear_probe", "03_clustering_metrics", "04_embeddings", "05_cluster_images")
SWEEP_NOTEBOOK = "06_ablations"
ALL_NOTEBOOKS = (*STUDY_NOTEBOOKS, SWEEP_NOTEBOOK)
KERNEL_NAME = "sclib"

# Figures every study run must produce (stems in the run's figures/ folder).
STUDY_FIGURES = (
    "fig1_training", "fig2_probe", "confusion", "fig4a_tsne", "fig4a_tsne_clusters", "fig4a_umap",
    "fig4a_umap_clusters", "fig4b_histogram", "fig3_clusters_best", "fig3_clusters_worst",
)
SWEEP_FIGURES = ("fig5_ablations",)

# Where the runner (the real job) departs from the notebooks' quick defaults: the seed's probe.
RUNNER_DEFAULTS: dict[str, Any] = {"probe_epochs": 100}

# Notebook parameters that are Config fields: the runner fills them from the preset.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


class StudyError(RuntimeError):
    """A study or sweep that cannot go on; the message names the notebook / variant and the cause."""


# ----------------------------------------------------------------------------------------------
# The runner


def notebooks_dir() -> Path:
    """The repository's notebooks/ (next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """A kernelspec that starts this very interpreter, installed into ``sys.prefix`` if missing.

    Papermill would otherwise start whatever "python3" the Jupyter paths name first, which may
    be another environment without sclib. If ``name`` is taken by another interpreter (e.g. in
    the user's Jupyter folder, which wins over ``sys.prefix``), a name unique to this
    interpreter is used instead.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def ours(kernel: str) -> bool | None:
        try:
            spec = KernelSpecManager().get_kernel_spec(kernel)
        except NoSuchKernel:
            return None
        return bool(spec.argv) and os.path.abspath(spec.argv[0]) == os.path.abspath(sys.executable)

    candidates = [name, f"{name}-{abs(hash(os.path.abspath(sys.executable))) % 10**8:08d}"]
    for kernel in candidates:
        state = ours(kernel)
        if state:
            return kernel
        if state is None or kernel == candidates[-1]:
            from ipykernel.kernelspec import install

            try:
                install(kernel_name=kernel, prefix=sys.prefix, display_name=f"Python (sclib, {Path(sys.prefix).name})")
            except OSError as err:
                raise StudyError(f"cannot install the Jupyter kernel {kernel!r} into {sys.prefix}: {err}") from None
            if ours(kernel):
                return kernel
    raise StudyError(f"no Jupyter kernel for {sys.executable} could be set up; install one with "
                     f"`{sys.executable} -m ipykernel install --sys-prefix --name {name}`")


def parse_params(items: list[str] | None, known: set[str]) -> dict[str, Any]:
    """``key=value`` strings -> values (YAML scalars/lists; Config fields get their declared type)."""
    import yaml

    hints = typing.get_type_hints(Config)
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is not key=value, e.g. --param epochs=2")
        if key not in known and key not in hints:
            raise ConfigError(f"--param {key} is not a notebook parameter or config field; known: {', '.join(sorted(known | set(hints)))}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key] = coerce(key, value, hints[key]) if key in hints and value is not None else value
    return out


def notebook_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


@dataclass
class NotebookJob:
    name: str
    source: Path
    parameters: dict[str, Any]


def route_parameters(sources: dict[str, Path], base: dict[str, Any], user: dict[str, Any]) -> list[NotebookJob]:
    """Each notebook gets the parameters it declares; Config fields it lacks go into ``config_overrides``."""
    jobs = []
    for name, path in sources.items():
        declared = notebook_parameters(path)
        params = {k: v for k, v in {**base, **user}.items() if k in declared}
        if "config_overrides" in declared:
            extra = {k: v for k, v in user.items() if k in CONFIG_FIELDS and k not in declared}
            params["config_overrides"] = extra
        jobs.append(NotebookJob(name, path, params))
    return jobs


def execute(job: NotebookJob, out: Path, kernel: str, log=print) -> Path:
    """Run one notebook into ``out``; on failure keep it (with the traceback) and raise StudyError."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target = out / f"{job.name}.ipynb"
    start = time.perf_counter()
    try:
        # Relative paths, so the executed notebooks record no folder of this machine.
        papermill.execute_notebook(os.path.relpath(job.source), os.path.relpath(target), parameters=job.parameters,
                                   kernel_name=kernel, cwd=str(out), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        export_html(target)
        first = (err.source or "").strip().splitlines()
        where = f"cell {err.exec_count}" + (f" ({first[0][:60]!r})" if first else "")
        raise StudyError(f"notebook {job.name} failed in {where}: {err.ename}: {_first_line(err.evalue)}; "
                         f"traceback kept in {target}") from None
    except Exception as err:  # the kernel died or could not start
        if target.exists():
            export_html(target)
        raise StudyError(f"notebook {job.name} could not be executed: {type(err).__name__}: {_first_line(str(err))}") from None
    export_html(target)
    log(f"study: {job.name} done in {time.perf_counter() - start:.0f} s")
    return target


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def export_html(notebook: Path) -> Path:
    """A self-contained HTML page of an executed notebook (images embedded, no prompts)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    write_text(target, body)
    return target


def device_description(run_dir: Path) -> str:
    path = run_dir / "config.json"
    if not path.exists():
        return "unknown (no run yet)"
    record = json.loads(path.read_text())
    dev = record.get("config", {}).get("device", "auto")
    name = record.get("provenance", {}).get("device", "")
    resolved = dev
    if dev == "auto":
        import torch

        resolved = "cuda" if torch.cuda.is_available() else "cpu"
    return f"{resolved} ({name})" if name and name != resolved else resolved


def write_summary(out: Path, run_dir: Path, dataset: str, preset: str) -> Path:
    """``summary.md``: this run's metrics next to the seed's Table 1 row, plus probes and caveats."""
    from sclib.config import load_config
    from sclib.plots import metrics_table_markdown

    cfg = load_config(run_dir / "config.json")
    report = json.loads((run_dir / "eval.json").read_text())
    lines = [f"# Self-Classifier study: {dataset}", "",
             f"- preset: **{preset}**; device: **{device_description(run_dir)}**",
             f"- backbone {cfg.backbone}, {cfg.epochs} epochs, batch {cfg.batch_size}, heads {cfg.heads}, "
             f"temperatures (row {cfg.row_tau}, column {cfg.col_tau})",
             f"- run folder: `{os.path.relpath(run_dir, out)}/`", "", f"> {caveat(preset, cfg)}", "",
             "## Clustering on the eval split (percent)", "",
             metrics_table_markdown(clustering_rows(report, dataset, cfg.epochs), label="run"),
             "## All heads", "", metrics_table_markdown(heads_rows(report), label="head")]
    probes = probe_summary(run_dir)
    if probes:
        probe_epochs = json.loads((out / "study.json").read_text()).get("probe_epochs") if (out / "study.json").exists() else None
        lines += ["## Probes on frozen backbone features (newest milestone)", "",
                  f"Linear probe: {probe_epochs or 'see notebook 02'} epochs (the seed: 100); kNN: 20 neighbours, no training.", "",
                  "| probe | epoch | top-1 | top-3 |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {p['epoch']} | {100 * p['top1']:.2f} | {100 * p['top3']:.2f} |" for name, p in probes.items()]
        lines.append("")
    lines += ["## Seed report, Table 1 (ResNet-18, 800 epochs, percent)", "",
              "| dataset | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {seed_report.TABLE1_NAMES[k]} | " + " | ".join(f"{row[m]:.4f}" for m in seed_report.METRICS) + " |"
              for k, row in seed_report.TABLE1.items()]
    lines.append("")
    target = out / "summary.md"
    write_text(target, "\n".join(lines))
    return target


def write_index(out: Path, title: str, notes: list[str], failed: str | None = None) -> Path:
    """``index.html`` linking every notebook report and figure found in ``out``."""
    items = []
    for name in ALL_NOTEBOOKS:
        nb = out / f"{name}.ipynb"
        if not nb.exists():
            continue
        status = " <strong>(failed: see the traceback)</strong>" if name == failed else ""
        items.append(f'<li><a href="{name}.html">{name}</a> (<a href="{name}.ipynb">notebook</a>){status}</li>')
    figures = sorted(p for p in out.rglob("figures/*.png") if "checkpoints" not in p.parts)
    thumbs = [f'<figure><a href="{html.escape(p.relative_to(out).as_posix())}"><img src="{html.escape(p.relative_to(out).as_posix())}" '
              f'alt="{p.stem}"></a><figcaption>{p.stem}</figcaption></figure>' for p in figures]
    summary = out / "summary.md"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
.warn{{background:#fff3cd;border:1px solid #e0c060;padding:.6em}}
figure{{display:inline-block;margin:.5em;text-align:center}} img{{max-width:22em;max-height:16em}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body>
<h1>{html.escape(title)}</h1>
{''.join(f'<p class="{"warn" if n.startswith("WARNING") else "note"}">{html.escape(n)}</p>' for n in notes)}
<h2>Reports</h2><ul>{''.join(items)}</ul>
{f'<h2>Summary</h2><p><a href="summary.md">summary.md</a></p><pre>{html.escape(summary.read_text())}</pre>' if summary.exists() else ''}
<h2>Figures</h2>{''.join(thumbs) or '<p>none yet</p>'}
</body></html>
"""
    target = out / "index.html"
    write_text(target, page)
    return target


def _sources(names: tuple[str, ...], folder: Path | None) -> dict[str, Path]:
    folder = Path(folder) if folder else notebooks_dir()
    sources = {name: folder / f"{name}.ipynb" for name in names}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise StudyError(f"notebook(s) {', '.join(missing)} not found; pass --notebooks with the folder holding them")
    return sources


def _all_declared(sources: dict[str, Path]) -> set[str]:
    return set().union(*(notebook_parameters(p) for p in sources.values())) - {"config_overrides"}


def _run_cfg(run_dir: Path) -> Config | None:
    from sclib.config import load_config

    return load_config(run_dir / "config.json") if (run_dir / "config.json").exists() else None


def run_study(dataset: str, out: str | Path, preset: str = "fast", params: list[str] | None = None,
              notebooks: str | Path | None = None, kernel: str | None = None, log=print) -> Path:
    """Execute notebooks 01-05 into ``out`` and write their HTML, ``index.html`` and ``summary.md``."""
    out = Path(out).resolve()
    sources = _sources(STUDY_NOTEBOOKS, notebooks)
    user = parse_params(params, _all_declared(sources))
    for key in ("dataset", "run_dir", "preset"):
        if key in user:
            raise ConfigError(f"--param {key} is set by the runner; use --dataset, --out or --preset instead")
    run_dir = out / "run"
    cfg = run_config(dataset, preset, run_dir, **{k: v for k, v in user.items() if k in CONFIG_FIELDS})
    out.mkdir(parents=True, exist_ok=True)
    # The notebooks run with ``out`` as their working folder, so the run folder is just "run".
    base: dict[str, Any] = {"dataset": dataset, "preset": preset, "run_dir": run_dir.name}
    # Config-valued notebook parameters come from the preset, not from the notebooks' quick defaults.
    base.update({k: getattr(cfg, k) for k in CONFIG_FIELDS if k not in ("dataset", "out")})
    base.update(RUNNER_DEFAULTS)
    jobs = route_parameters(sources, base, user)
    write_text(out / "study.json", json.dumps({"dataset": dataset, "preset": preset, "params": user,
                                              "probe_epochs": user.get("probe_epochs", RUNNER_DEFAULTS["probe_epochs"]),
                                              "config": {**cfg.to_dict(), "out": run_dir.name}}, indent=2, default=str))
    kernel = kernel or ensure_kernel()
    title = f"Self-Classifier study: {dataset} (preset {preset})"
    log(f"study: {dataset}, preset {preset}, {cfg.epochs} epochs, backbone {cfg.backbone}, into {out}")
    for job in jobs:
        try:
            execute(job, out, kernel, log)
        except StudyError:
            write_index(out, title, [f"Stopped at {job.name}."], failed=job.name)
            raise
    write_summary(out, run_dir, dataset, preset)
    notes = [f"Preset: {preset}; device: {device_description(run_dir)}.", caveat(preset, _run_cfg(run_dir))]
    write_index(out, title, notes)
    return out


def run_sweep_study(dataset: str, grid: str | Path, out: str | Path, preset: str = "fast",
                    params: list[str] | None = None, notebooks: str | Path | None = None,
                    kernel: str | None = None, log=print) -> Path:
    """Run the ablation grid into ``out/sweep`` (resumable), then notebook 06 into ``out``."""
    out = Path(out).resolve()
    sources = _sources((SWEEP_NOTEBOOK,), notebooks)
    user = parse_params(params, _all_declared(sources))
    sweep_dir = out / "sweep"
    config_values = {k: v for k, v in user.items() if k in CONFIG_FIELDS}
    run_sweep(dataset, grid, os.path.relpath(sweep_dir), preset, log=log, **config_values)
    # Notebook 06 runs in ``out``: paths relative to it keep this machine's folders out of the report.
    base = {"dataset": dataset, "preset": preset, "sweep_dir": sweep_dir.name,
            "grid": os.path.relpath(Path(grid).resolve(), out),
            **{k: None for k in CONFIG_FIELDS if k not in ("dataset", "out")}}
    jobs = route_parameters(sources, base, user)
    kernel = kernel or ensure_kernel()
    title = f"Self-Classifier study: {dataset} (preset {preset})"
    try:
        execute(jobs[0], out, kernel, log)
    except StudyError:
        write_index(out, title, [f"Stopped at {SWEEP_NOTEBOOK}."], failed=SWEEP_NOTEBOOK)
        raise
    # The study's run if there is one, else the sweep's first variant, tells the device and recipe.
    described = next((d for d in [out / "run", *sorted(sweep_dir.iterdir())] if (d / "config.json").exists()), out / "run")
    notes = [f"Preset: {preset}; device: {device_description(described)}.", caveat(preset, _run_cfg(described))]
    write_index(out, title, notes)
    return out


# ----------------------------------------------------------------------------------------------
# CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``study`` and ``sweep`` subcommands for ``python -m sclib``."""
    st = sub.add_parser("study", help="run notebooks 01-05 with papermill into an HTML report and summary.md",
                        description="Execute the study notebooks for one data set (rerun to resume).")
    _common(st)
    st.set_defaults(handler=_study_command)

    sw = sub.add_parser("sweep", help="run an ablation grid (resumable) and notebook 06",
                        description="Pre-train every variant of an ablation grid, then tabulate it like the seed's Table 2.")
    _common(sw)
    sw.add_argument("--grid", required=True, help="YAML grid: base (shared overrides) and variants (see ablations.yaml)")
    sw.set_defaults(handler=_sweep_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="data set (default: digits)")
    parser.add_argument("--preset", choices=PRESETS, default="fast",
                        help="fast: CPU-sized (default); seed: the seed report's recipe (GPU)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE",
                        help="a notebook parameter or config field, e.g. --param epochs=2 (repeatable)")
    parser.add_argument("--out", help="output folder (default: results/DATASET)")
    parser.add_argument("--notebooks", help="folder holding the notebooks (default: the repository's notebooks/)")
    parser.add_argument("--kernel", help=f"Jupyter kernel name (default: {KERNEL_NAME!r}, installed for this interpreter)")


def _study_command(args: argparse.Namespace) -> int:
    try:
        out = run_study(args.dataset, args.out or f"results/{args.dataset}", args.preset, args.param,
                        args.notebooks, args.kernel, log=_log)
    except StudyError as err:
        print(f"sclib: error: {err}", file=sys.stderr)
        return 1
    _log(f"study: report in {out / 'index.html'}, summary in {out / 'summary.md'}")
    return 0


def _sweep_command(args: argparse.Namespace) -> int:
    try:
        out = run_sweep_study(args.dataset, args.grid, args.out or f"results/{args.dataset}", args.preset,
                              args.param, args.notebooks, args.kernel, log=_log)
    except StudyError as err:
        print(f"sclib: error: {err}", file=sys.stderr)
        return 1
    _log(f"sweep: report in {out / (SWEEP_NOTEBOOK + '.html')}")
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
