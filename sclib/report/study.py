"""The study runner: executes the notebooks with papermill and writes the HTML report.

``python -m sclib study`` trains the seeds of a recipe and runs notebooks 01-05 in a kernel of the
current interpreter, or, with ``--runs``, renders finished runs without training (runs trained
on a GPU machine and copied home). ``python -m sclib sweep`` runs an ablation grid
(``sclib.report.sweep``) and then notebook 06. The front page (``index.html``, ``summary.md``) is
``sclib.report.summary``'s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib.data import DATA_ROOT_ENV, REGISTRY, resolve_data_root
from sclib.report import lab
from sclib.report.summary import STYLESHEET, write_index, write_stylesheet, write_summary
from sclib.report.sweep import run_sweep, sweep_variants
from sclib.run.checkpoint import first_line
from sclib.run.config import Config, ConfigError, Recipe, differences, load_config
from sclib.run.files import (
    LOCK_NAME,
    UnreadableFileError,
    make_folder,
    read_json,
    suggested_command,
    write_json,
    write_text,
)
from sclib.run.lifecycle import check_resumable, seed_configs
from sclib.run.paths import RUN_GROUP, STUDY_NOTEBOOKS, SWEEP_NOTEBOOK, RunPaths, folder_seed, run_folders, seed_folder
from sclib.run.records import check_finished, read_arrays, read_evaluation, read_history, read_metrics, read_probe

KERNEL_NAME = lab.KERNEL_NAME
fallback_kernel_name = lab.fallback_kernel_name

# The study's probe: the seed's 100 epochs, set here too so that a notebook's default cannot move committed numbers.
RUNNER_DEFAULTS: dict[str, Any] = {"probe_epochs": 100}

# Parameters the runner sets itself; --param may not.
RUNNER_PARAMS = ("dataset", "preset", "run_dir", "seeds", "config_overrides", "config_file", "train", "sweep_dir",
                 "grid")


class StudyError(RuntimeError):
    """A study or sweep that cannot go on; the message names the notebook / variant and the cause."""


# ----------------------------------------------------------------------------------------------
# Notebooks and kernels


def notebooks_dir() -> Path:
    """The repository's notebooks/ (next to the package in a checkout or editable install)."""
    return lab.notebooks_dir()


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """The kernel the study's notebooks run in: ``sclib.report.lab.ensure_kernel`` (the one JupyterLab lists too)."""
    try:
        return lab.ensure_kernel(name)
    except lab.KernelError as err:
        raise StudyError(str(err)) from None


def pair_difference(script: Path, notebook: Path) -> str | None:
    """Where a jupytext ``.py`` and its ``.ipynb`` first differ (cell kind, source or tags); None if they agree."""
    import jupytext
    import nbformat

    ours = jupytext.read(script).cells
    theirs = nbformat.read(notebook, as_version=4).cells

    def cell(c) -> tuple:
        return c.cell_type, c.source, c.metadata.get("tags")

    for i, (a, b) in enumerate(zip(ours, theirs), start=1):
        if cell(a) != cell(b):
            return f"cell {i} differs"
    if len(ours) != len(theirs):
        return f"the .py has {len(ours)} cells, the .ipynb {len(theirs)}"
    return None


def notebook_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def parse_params(items: list[str] | None, known: set[str]) -> dict[str, Any]:
    """``key=value`` strings -> values (YAML scalars/lists) for notebook parameters that are not flags."""
    import yaml

    training = set(typing.get_type_hints(Config))
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is not key=value, e.g. --param probe_epochs=20")
        if key in training:
            raise ConfigError(f"--param {key} is a training parameter: pass it as --{key.replace('_', '-')} instead")
        if key in RUNNER_PARAMS:
            raise ConfigError(f"--param {key} is set by the runner; use --dataset, --preset, --seeds, --out or --runs")
        if key not in known:
            raise ConfigError(
                f"--param {key} is not a parameter of these notebooks; they take {', '.join(sorted(known))}"
            )
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
        _check_param(key, raw, out[key])
    return out


def _check_param(key: str, raw: str, value: Any) -> None:
    """The notebooks' own type check (``report.PARAMETERS``), before anything runs: a bad value
    found in notebook 02 would come after every seed has trained in notebook 01."""
    from sclib.report.notebook import PARAMETERS

    if key not in PARAMETERS:
        return
    expected, ok, how = PARAMETERS[key]
    if not ok(value):
        raise ConfigError(f"--param {key}={raw} must be {expected}, e.g. {param_syntax(how)}")


def param_syntax(papermill_hint: str) -> str:
    """A papermill hint (``-p probe_epochs 20``, ``-y "seeds: [0, 1]"``) as ``--param KEY=VALUE``."""
    if papermill_hint.startswith("-p "):
        _, key, value = papermill_hint.split(" ", 2)
    else:
        key, _, value = papermill_hint.removeprefix("-y ").strip('"').partition(": ")
    return f"--param {key}={value}"


@dataclass
class NotebookJob:
    name: str
    source: Path
    parameters: dict[str, Any]


def plan(sources: dict[str, Path], values: dict[str, Any]) -> list[NotebookJob]:
    """Each notebook gets the parameters it declares, and only those."""
    jobs = []
    for name, path in sources.items():
        declared = notebook_parameters(path)
        jobs.append(NotebookJob(name, path, {k: v for k, v in values.items() if k in declared}))
    return jobs


def execute(job: NotebookJob, out: Path, kernel: str, log=print, step: str = "") -> Path:
    """Run one notebook into ``out``; on failure keep it (with the traceback) and raise StudyError.

    What the notebook prints (training progress among it) is passed through to stderr as it runs.
    ``step``: where it stands in the study ("[2/5] "), before its name.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target = out / f"{job.name}.ipynb"
    start = time.perf_counter()
    log(f"study: {step}{job.name} ...")
    try:
        with NotebookKernel() as quiet:
            # Relative paths, so the executed notebooks record no folder of this machine.
            papermill.execute_notebook(os.path.relpath(job.source), os.path.relpath(target),
                                       parameters=job.parameters, kernel_name=kernel, cwd=str(out),
                                       progress_bar=False, log_output=False, stdout_file=sys.stderr,
                                       # the kernel's own start-up notices are not the study's output
                                       extra_arguments=["--IPKernelApp.log_level=ERROR"],
                                       # a cell's consecutive prints as one output, not a box per epoch line
                                       coalesce_streams=True, **quiet.options())
    except PapermillExecutionError as err:
        export_html(target)
        first = (err.source or "").strip().splitlines()
        where = f"cell {err.exec_count}" + (f" ({first[0][:60]!r})" if first else "")
        raise StudyError(f"notebook {job.name} failed in {where}: {err.ename}: {first_line(err.evalue)}; "
                         f"traceback kept in {target}") from None
    except Exception as err:  # the kernel died or could not start
        if target.exists():
            export_html(target)
        raise StudyError(
            f"notebook {job.name} could not be executed: {type(err).__name__}: {first_line(str(err))}"
        ) from None
    export_html(target)
    log(f"study: {step}{job.name} done in {time.perf_counter() - start:.0f} s")
    return target


class NotebookKernel:
    """How a notebook's kernel is started and stopped, so that a successful run prints no kernel notice.

    jupyter_client interrupts (SIGINT) every kernel before asking it to shut down, in case a cell
    still runs; a SIGINT that lands while ipykernel answers a message is logged as
    ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel`` (one successful run in eight on
    the 2-core reference machine). Here the kernel is interrupted only while a cell runs (the study
    was stopped), which nbclient's cell hooks tell. The kernel talks over IPC sockets in a private
    folder instead of TCP on localhost, which ipykernel warns about as unencrypted (``Kernel is
    running over TCP without encryption``) and which other local users could connect to.
    """

    def __init__(self) -> None:
        self.busy = False  # a cell was sent and its reply has not come back
        self.folder: Path | None = None

    def __enter__(self) -> NotebookKernel:
        import tempfile

        self._folder = tempfile.TemporaryDirectory(prefix="sclib-kernel-")
        self.folder = Path(self._folder.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self._folder.cleanup()

    def options(self) -> dict[str, Any]:
        """papermill.execute_notebook's keywords for nbclient: the kernel manager and the cell hooks."""
        return {"kernel_manager_class": self.manager_class(), "on_cell_execute": self._sent,
                "on_cell_executed": self._answered}

    def _sent(self, **_: Any) -> None:
        self.busy = True

    def _answered(self, **_: Any) -> None:
        self.busy = False

    def manager_class(self) -> type:
        from jupyter_client.manager import AsyncKernelManager
        from traitlets import CaselessStrEnum, default

        state, sockets = self, self.folder

        class Manager(AsyncKernelManager):
            transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

            @default("ip")
            def _socket_prefix(self) -> str:  # absolute: the kernel runs in the study folder, this process elsewhere
                return str(sockets / "kernel")

            async def _async_interrupt_kernel(self) -> None:  # what shutdown_kernel calls first
                if self.shutting_down and not state.busy:
                    return
                await super()._async_interrupt_kernel()

        return Manager


def export_html(notebook: Path) -> Path:
    """A light HTML page of an executed notebook: nbconvert's bare body and the study's shared stylesheet.

    nbconvert's full templates embed 350 KB of CSS in every page; figures are files the
    notebooks link to, so a page weighs what its text and tables do.
    """
    import html

    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(template_name="basic", exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown" and c.source),
                 notebook.stem)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f'<link rel="stylesheet" href="{STYLESHEET}"></head>\n<body class="notebook">'
            f'<p class="nav"><a href="index.html">study index</a></p>\n{body}\n</body></html>\n')
    write_stylesheet(notebook.parent)
    target = notebook.with_suffix(".html")
    write_text(target, page)
    return target


def _sources(names: tuple[str, ...], folder: str | Path | None) -> dict[str, Path]:
    folder = Path(folder) if folder else notebooks_dir()
    sources = {name: folder / f"{name}.ipynb" for name in names}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise StudyError(f"notebook(s) {', '.join(missing)} not found; pass --notebooks with the folder holding them")
    for path in sources.values():  # the .py is the source people edit: the .ipynb run must say the same
        script = path.with_suffix(".py")
        differs = pair_difference(script, path) if script.exists() else None
        if differs:
            raise ConfigError(f"{script} and {path.name} differ ({differs}); run `jupytext --sync {script}` "
                              "so that the notebook the study runs is the one that was edited")
    return sources


def _declared(sources: dict[str, Path]) -> set[str]:
    return set().union(*(notebook_parameters(p) for p in sources.values()))


# ----------------------------------------------------------------------------------------------
# Studies


def _rebased(overrides: dict[str, Any], out: Path, dataset: str | None) -> dict[str, Any]:
    """``overrides`` for work done inside ``out``: the data root this process would read, made
    relative to ``out``.

    That root is the given ``data_root``, else $SCLIB_DATA, else ./data, each relative to where
    the command was started (:func:`sclib.data.resolve_data_root`). Left unresolved, the
    notebooks and sweep runs, which work inside ``out``, would look for ``out/data`` instead. A
    bundled data set (digits) reads no folder and gets none, unless one was given.
    """
    given = overrides.get("data_root")
    record = REGISTRY.get(str(dataset or "digits").strip().lower().replace("-", "_"))
    if not given and (record is None or record.bundled):
        return dict(overrides)
    root = resolve_data_root(given)
    if root.is_absolute():
        return {**overrides, "data_root": str(root)}
    return {**overrides, "data_root": os.path.relpath(root.resolve(), out)}


def run_study(recipe: Recipe, seeds: list[int], out: str | Path, params: list[str] | None = None,
              notebooks: str | Path | None = None, kernel: str | None = None, note: str | None = None,
              log=print) -> Path:
    """Train (or resume) every seed into ``out/run/seed<N>`` and execute notebooks 01-05 into ``out``."""
    out = Path(out).resolve()
    sources = _sources(STUDY_NOTEBOOKS, notebooks)
    user = parse_params(params, _declared(sources))
    # Validate every seed's config before anything runs or is written.
    configs = seed_configs(Recipe(recipe.dataset, recipe.preset, recipe.file,
                                  {**recipe.overrides, "out": str(out / RUN_GROUP)}).resolve(), seeds)
    check_group(out / RUN_GROUP, seeds, "pass every seed it holds to --seeds")
    for c in configs:  # a seed folder of another recipe is refused here, not inside notebook 01
        check_resumable(c, RunPaths(Path(c.out)))
    cfg = configs[0]
    # the notebooks run inside ``out``: a relative data folder is given relative to it
    overrides = _rebased({k: v for k, v in recipe.overrides.items() if k != "out"}, out, cfg.dataset)
    values = {"dataset": cfg.dataset, "preset": cfg.preset, "run_dir": RUN_GROUP, "seeds": list(seeds),
              "config_overrides": overrides,
              "config_file": os.path.relpath(Path(recipe.file).resolve(), out) if recipe.file else None,
              "train": True, "note": note, **RUNNER_DEFAULTS, **user}
    return _run(sources, values, out, kernel, log, f"{cfg.dataset}, recipe {cfg.preset}, seeds {list(seeds)}, "
                                                     f"{cfg.epochs} epochs of {cfg.backbone}",
                recipe.overrides.get("data_root"))


def render_study(runs: str | Path, out: str | Path, params: list[str] | None = None,
                 notebooks: str | Path | None = None, kernel: str | None = None, note: str | None = None,
                 log=print) -> Path:
    """Report finished runs (a run or a folder of seed runs) without training: copy their files
    (not their checkpoints) into ``out/run`` and execute notebooks 01-05 on them."""
    out = Path(out).resolve()
    folders = run_folders(runs)
    configs = [load_config(RunPaths(f).config) for f in folders]
    if len({c.dataset for c in configs}) > 1:
        raise ConfigError(f"{runs} mixes data sets ({sorted({c.dataset for c in configs})}); render one at a time")
    check_finished([(c, RunPaths(f)) for c, f in zip(configs, folders)], "finish it before rendering")
    check_rendered_files(folders, configs)
    check_group(out / RUN_GROUP, [c.seed for c in configs], "render them with the others, or remove them")
    for folder, cfg in zip(folders, configs):
        target = seed_folder(out / RUN_GROUP, cfg.seed)
        if folder.resolve() == target.resolve():
            continue
        if (target / "config.json").exists():
            diffs = differences(load_config(target / "config.json"), cfg)
            if diffs:
                listed = ", ".join(f"{k} {a!r} there, {b!r} in {folder}" for k, (a, b) in diffs.items())
                raise ConfigError(f"{target} already holds another run ({listed}); render into another --out")
    make_folder(out)
    for folder, cfg in zip(folders, configs):
        target = seed_folder(out / RUN_GROUP, cfg.seed)
        if folder.resolve() != target.resolve():
            shutil.copytree(folder, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoints", LOCK_NAME))
    sources = _sources(STUDY_NOTEBOOKS, notebooks)
    user = parse_params(params, _declared(sources))
    cfg = configs[0]
    values = {"dataset": cfg.dataset, "preset": cfg.preset, "run_dir": RUN_GROUP, "seeds": [c.seed for c in configs],
              "train": False, "note": note, **RUNNER_DEFAULTS, **user}
    return _run(sources, values, out, kernel, log, f"{cfg.dataset}, recipe {cfg.preset}, {len(configs)} finished "
                                                     f"run(s) from {runs}")


def check_group(group: Path, seeds: list[int], fix: str) -> None:
    """Refuse a study folder whose run group holds seed runs that this study does not list.

    The report reads every seed of its group, so a seed left from an earlier study (``--seeds 0 1``
    then ``--seeds 0``, or ``--runs`` of another recipe) would join this study's mean ± std.
    ``fix`` says what to do besides choosing another ``--out``.
    """
    held = sorted(s for p in group.glob("seed*") if (s := folder_seed(p)) is not None and (p / "config.json").exists())
    stale = [s for s in held if s not in seeds]
    if stale:
        raise ConfigError(f"{group} already holds the run(s) of seed(s) {', '.join(map(str, stale))}, which this "
                          f"study (seeds {', '.join(map(str, seeds))}) does not list, and the report would mix them "
                          f"in: {fix}, or choose another --out")


def check_rendered_files(folders: list[Path], configs: list[Config]) -> None:
    """Refuse, in one line, runs that lack what notebooks 02-05 read, naming the commands that make it.

    The study's copy of a run leaves its checkpoints out, so nothing missing could be computed
    later: it would fail inside notebook 02 with "no checkpoint yet" about a trained run.
    """
    missing, commands = [], []
    for folder, cfg in zip(folders, configs):
        paths = RunPaths(folder)
        lacks = [p.name for p in (paths.eval, paths.arrays, paths.samples) if not p.exists()]
        if paths.eval.exists() and read_json(paths.eval, kind=dict).get("epoch") != cfg.epochs:
            lacks.append(f"eval.json of epoch {cfg.epochs}")
        if folder == folders[0] and paths.arrays.exists() and not has_embedding_source(paths):  # notebook 04's seed
            lacks.append(f"{paths.eval_features.name} (or the {paths.embeddings.name} notebook 04 drew from it)")
        if lacks:
            commands.append(suggested_command("python -m sclib evaluate --run {}", folder))
        if not paths.probe.exists():
            lacks.append(paths.probe.name)
            commands.append(suggested_command("python -m sclib probe --run {} --all-kept", folder))
        if lacks:
            missing.append(f"{folder} lacks {', '.join(lacks)}")
    if missing:
        raise ConfigError(f"{'; '.join(missing)}; the report reads them and its copy of a run has no checkpoints "
                          f"to make them, so make them first: {' && '.join(commands)}")
    for folder, cfg in zip(folders, configs):  # present: now read whole, so a damaged one is named here
        paths = RunPaths(folder)
        read_metrics(paths)
        read_evaluation(paths, cfg.seed)
        read_arrays(paths)
        read_probe(paths)
        if paths.history.exists():
            read_history(paths, cfg.epochs)


def has_embedding_source(paths: RunPaths) -> bool:
    """Whether notebook 04 can draw this run: its features, or the embeddings it drew before."""
    if paths.eval_features.exists() or paths.embeddings.exists():
        return True
    if not paths.legacy_arrays.exists():
        return False
    import zipfile

    import numpy as np

    try:  # evaluated before the features had a file of their own (a damaged file is named further on)
        with np.load(paths.legacy_arrays) as arrays:
            return "features" in arrays.files
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True


def _run(sources: dict[str, Path], values: dict[str, Any], out: Path, kernel: str | None, log, what: str,
         data_root: str | None = None) -> Path:
    """Execute the notebooks in ``out``, each step timed; ``data_root`` (the --data-root given, if any)
    is resolved where the command started and handed to the kernels as their default data root."""
    make_folder(out)
    write_json(out / "study.json", {k: v for k, v in values.items() if k != "train"})
    write_lock(out)
    kernel = kernel or ensure_kernel()
    log(f"study: {what}, into {out}")
    jobs = plan(sources, values)
    steps = StepTimes(out / STEP_TIMES, [job.name for job in jobs])
    for k, job in enumerate(jobs, start=1):
        remaining = steps.remaining(job.name)
        if remaining:
            log(f"study: {remaining}")
        start = time.perf_counter()
        try:
            with default_data_root(data_root):
                execute(job, out, kernel, log, step=f"[{k}/{len(jobs)}] ")
        except StudyError:
            write_index(out, failed=job.name)
            raise
        steps.record(job.name, time.perf_counter() - start)
    times = steps.times
    write_summary(out, times)
    write_index(out)
    return out


@contextlib.contextmanager
def default_data_root(given: str | None) -> Iterator[None]:
    """Within the block, $SCLIB_DATA is the data root this process would read (``given``, else
    $SCLIB_DATA, else ./data), as an absolute path, for the notebook kernels it starts.

    A run trained without a data_root (from the repository root, say) records none, and whoever
    evaluates or probes it reads the default data root of its own working directory: inside the
    study folder, where the kernels run, that would be ``results/DATASET/data``.
    """
    before = os.environ.get(DATA_ROOT_ENV)
    os.environ[DATA_ROOT_ENV] = str(resolve_data_root(given).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DATA_ROOT_ENV, None)
        else:
            os.environ[DATA_ROOT_ENV] = before


# What each step of the study took the last time it ran in this folder: the next run's estimate.
STEP_TIMES = "step_times.json"
# The step whose time depends on what is left to train (nothing, on a rerun): the trainer estimates it.
TRAINING_STEP = "01_pretrain"


class StepTimes:
    """Each step's seconds, this run's and those the study folder recorded the last time.

    A study cannot know how long its report steps (02-05) take before they have run once; a rerun
    in the same folder (after an interruption, or with new parameters) can say what they took
    then. Notebook 01's time is left out: it trains only what is left, and the trainer itself
    says how long that will take after a few steps.
    """

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names, self.times = path, names, {}
        self.last = self._read(path)

    @staticmethod
    def _read(path: Path) -> dict[str, float]:
        try:
            raw = read_json(path, kind=dict) if path.exists() else {}
        except (OSError, UnreadableFileError):
            return {}  # a damaged record only costs the estimate
        return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def remaining(self, name: str) -> str | None:
        """What the steps from ``name`` on took the last time, as a line; None if one was never timed."""
        left = [n for n in self.names[self.names.index(name):] if n != TRAINING_STEP]
        if not left or any(n not in self.last for n in left):
            return None
        seconds = sum(self.last[n] for n in left)
        training = " after the training" if TRAINING_STEP in self.names[self.names.index(name):] else ""
        return (f"the report steps left{training} ({', '.join(left)}) took {_duration(seconds)} "
                "the last time this study ran here")

    def record(self, name: str, seconds: float) -> None:
        self.times[name] = seconds
        write_json(self.path, {**self.last, **self.times})


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def write_lock(out: Path) -> Path:
    """``requirements.lock.txt``: the exact package versions that produced a study's numbers."""
    from importlib import metadata

    versions = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]},
                      key=str.lower)
    return write_text(out / "requirements.lock.txt", "\n".join(versions) + "\n")


def train_sweep(recipe: Recipe, grid: str | Path | dict[str, Any] | None, seeds: list[int], out: Path,
                log=print) -> Path:
    """Train the grid into ``out/sweep`` from inside ``out``, so that every run's config.json
    records ``sweep/<variant>/seed<N>`` (as a study records ``run/seed<N>``), not this machine's
    folders; paths given relative to the caller are rebased first."""
    import contextlib

    sweep_variants(recipe, grid, out / "sweep", seeds)  # every config checked before anything is written
    recipe = Recipe(recipe.dataset, recipe.preset, str(Path(recipe.file).resolve()) if recipe.file else None,
                    _rebased(recipe.overrides, out, recipe.dataset))
    grid = Path(grid).resolve() if isinstance(grid, (str, Path)) else grid
    make_folder(out)
    with contextlib.chdir(out):
        run_sweep(recipe, grid, Path("sweep"), seeds, log=log)
    return out / "sweep"


def run_sweep_study(recipe: Recipe, grid: str | Path, seeds: list[int], out: str | Path,
                    params: list[str] | None = None, notebooks: str | Path | None = None,
                    kernel: str | None = None, note: str | None = None, log=print) -> Path:
    """Run the ablation grid into ``out/sweep`` (resumable), then notebook 06 into ``out``."""
    out = Path(out).resolve()
    sources = _sources((SWEEP_NOTEBOOK,), notebooks)
    user = parse_params(params, _declared(sources))
    sweep_dir = train_sweep(recipe, grid, seeds, out, log)
    write_lock(out)
    # Notebook 06 runs in ``out``: paths relative to it keep this machine's folders out of the report.
    values = {"dataset": recipe.dataset or "digits", "preset": recipe.preset, "sweep_dir": sweep_dir.name,
              "grid": os.path.relpath(Path(grid).resolve(), out), "seeds": list(seeds), "train": False, **user}
    kernel = kernel or ensure_kernel()
    try:
        execute(plan(sources, values)[0], out, kernel, log)
    except StudyError:
        write_index(out, failed=SWEEP_NOTEBOOK)
        raise
    write_index(out)
    return out
