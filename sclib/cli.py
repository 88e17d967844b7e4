"""Command line: ``python -m sclib COMMAND``; one parameter vocabulary and one exit-status rule."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import typing
import warnings

from sclib import __version__
from sclib.run.config import (
    HELP,
    PRESETS,
    REFINE_HELP,
    SEED_LIMIT,
    Config,
    ConfigError,
    Recipe,
    RefineSettings,
    to_yaml,
    typed_overrides,
)
from sclib.run.files import path_problem

DESCRIPTION = """\
Self-Classifier (Amrani, Karlinsky, Bronstein, ECCV 2022) on small image data sets.

Every training parameter is a flag of pretrain, study and sweep, named as in config.json and
in the notebooks' parameters. Recipes are files, sclib/recipes/PRESET/DATASET.yaml;
`python -m sclib pretrain --dataset D --preset P --print-config` shows one resolved."""

EPILOG = """\
exit status: 0 done; 1 a run or notebook failed (its traceback is kept); 2 bad input (a
parameter, a missing data set, a damaged checkpoint or run file, an unwritable folder, a run
folder in use by another process); 130 interrupted by Ctrl-C, SIGTERM or SIGHUP (rerun the same
command to resume)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line in the same style as every other error, and a
    flag must be spelled out (``--epoch`` silently meaning ``--epochs`` hides typos)."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"sclib: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------------------------
# Config flags: one per Config field, with the value the resolved recipe would use


def _shown_defaults(argv: list[str]) -> tuple[Config | None, str]:
    """The config the recipe flags already given on the command line resolve to, for --help."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--dataset", "--preset", "--config", "--data-root"):
        pre.add_argument(flag)
    known, _ = pre.parse_known_args(argv)
    recipe = Recipe(dataset=known.dataset, preset=known.preset or "fast", file=known.config,
                    overrides={"data_root": known.data_root} if known.data_root else {})
    try:
        return recipe.resolve(), recipe.describe()
    except (ConfigError, OSError, ValueError) as err:
        return None, f"{recipe.describe()} (cannot be resolved: {err})"


def _add_config_flags(parser: argparse.ArgumentParser, argv: list[str], skip: tuple[str, ...] = ()) -> None:
    """``skip``: fields the command decides itself (a study puts its runs in OUT/run)."""
    shown, source = _shown_defaults(argv)
    group = parser.add_argument_group(
        "training parameters",
        f"Defaults shown are those of {source}; pass --dataset/--preset/--config before --help "
        "to see another recipe's.")
    group.add_argument("--preset", choices=PRESETS, default=None,
                       help="recipe family: fast (CPU minutes), gpu (GPU minutes), seed (the seed report's "
                            "800 epochs) (default: fast)")
    group.add_argument("--config", metavar="FILE",
                       help="start from a run's config.json or a recipe YAML instead of a preset")
    hints = typing.get_type_hints(Config)
    flags = tuple(f.name for f in dataclasses.fields(Config) if f.name != "preset" and f.name not in skip)
    parser.set_defaults(config_flags=flags)
    for f in dataclasses.fields(Config):
        if f.name not in flags:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f" (default: {getattr(shown, f.name)})" if shown is not None else ""
        help_text = HELP[f.name].replace("%", "%%") + default.replace("%", "%%")
        hint = hints[f.name]
        if hint is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif typing.get_origin(hint) is list:
            group.add_argument(flag, dest=f.name, nargs="+", default=None, metavar="V", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe the flags name plus the flags given explicitly, typed."""
    if args.config and args.preset:
        raise ConfigError("--config and --preset both name a recipe; pass one")
    given = {name: getattr(args, name) for name in args.config_flags
             if name != "dataset" and getattr(args, name) is not None}
    overrides = typed_overrides(given, "flags")
    return Recipe(dataset=args.dataset, preset=args.preset or "fast", file=args.config, overrides=overrides)


def _seeds(value: str) -> int:
    """A seed from the command line: an integer in [0, 2**32) (see ``config.SEED_LIMIT``)."""
    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers, got {value!r}") from None
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"seeds lie in [0, 2**32), got {seed}: PyTorch's CPU generator keeps 32 bits, so a larger seed "
            "repeats a smaller one, and a negative one names a folder no command finds")
    return seed


# ----------------------------------------------------------------------------------------------
# The parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="python -m sclib", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sclib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    pre = sub.add_parser("pretrain", help="pre-train (or resume) a run", epilog=EPILOG,
                         description="Pre-train a Self-Classifier; rerun the same command to resume.")
    _add_config_flags(pre, argv)
    pre.add_argument("--seeds", nargs="+", type=_seeds, metavar="N",
                     help="train one run per seed into OUT/seed<N> (sibling run folders) instead of one run in OUT")
    pre.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", epilog=EPILOG,
                        help="score every head and the k-means baselines (eval.json, arrays.json, samples.png)",
                        description="Score a run (or every run of a --seeds folder) on its eval split and "
                                    "export the arrays the reports draw from.")
    ev.add_argument("--run", required=True, help="run folder, or a folder of seed runs")
    ev.add_argument("--checkpoint", help="checkpoint file (default: the newest)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    pr = sub.add_parser("probe", help="linear and kNN probes on frozen features (probe.csv)", epilog=EPILOG,
                        description="Probe a run (or every run of a --seeds folder) on frozen backbone features.")
    pr.add_argument("--run", required=True, help="run folder, or a folder of seed runs")
    pr.add_argument("--checkpoint", help="checkpoint file (default: the newest)")
    pr.add_argument("--all-kept", action="store_true", help="probe the checkpoint of every kept epoch (keep_epochs)")
    pr.add_argument("--epochs", type=int, default=100, help="linear probe epochs (default: 100, the seed's)")
    pr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    rf = sub.add_parser("refine", epilog=EPILOG,
                        help="second stage: neighbour consistency (SCAN) on a finished run (refine/)",
                        description="Train the run's projector and heads so that each image agrees with its nearest "
                                    "neighbours in the frozen backbone's feature space (SCAN's clustering step), "
                                    "starting from the run's newest checkpoint; writes RUN/refine/ and leaves the "
                                    "first stage's files as they are. Rerun the same command to resume.")
    rf.add_argument("--run", required=True, help="run folder, or a folder of seed runs")
    defaults = RefineSettings()
    for field in dataclasses.fields(RefineSettings):
        rf.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                        default=getattr(defaults, field.name),
                        help=f"{REFINE_HELP[field.name]} (default: {getattr(defaults, field.name)})")
    rf.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    rf.add_argument("--no-progress", action="store_true", help="no per-epoch lines")

    st = sub.add_parser("study", help="run notebooks 01-05 into an HTML report and summary.md", epilog=EPILOG,
                        description="Train (or resume) the seeds of a recipe and execute the study notebooks; "
                                    "with --runs, render runs trained elsewhere without training.")
    _add_config_flags(st, argv, skip=("out", "seed"))
    _study_flags(st, default_seeds=[0, 1, 2])
    st.add_argument("--runs", metavar="DIR",
                    help="render these finished runs (a run or a folder of seed runs, e.g. copied home from a GPU "
                         "machine without checkpoints) instead of training; the recipe is read from them")

    sw = sub.add_parser("sweep", help="run an ablation grid (resumable) and notebook 06", epilog=EPILOG,
                        description="Pre-train every variant of an ablation grid, then tabulate it like the seed's "
                                    "Table 2. Precedence: recipe < grid base < flags < variant.")
    _add_config_flags(sw, argv, skip=("out", "seed"))
    _study_flags(sw, default_seeds=[0])
    sw.add_argument(
        "--grid", required=True, help="YAML grid: base (shared overrides) and variants (see ablations.yaml)"
    )
    fr = sub.add_parser("front", help="write the front page results/index.html and results/README.md", epilog=EPILOG,
                        description="Build the study's front page from the committed study folders: the seed's "
                                    "Table 1 beside every data set's mean ± std over seeds, the data sets not run, "
                                    "the ablation grids and a figure; also the results table of the README beside "
                                    "the results folder (between its markers). Trains nothing.")
    fr.add_argument("--results", default="results", metavar="DIR", help="folder of study folders (default: results)")
    fr.add_argument("--readme", metavar="FILE",
                    help="README whose results table to rewrite (default: the one beside DIR, if it has the markers)")
    return parser


def _study_flags(parser: argparse.ArgumentParser, default_seeds: list[int]) -> None:
    parser.add_argument("--seeds", nargs="+", type=_seeds, default=default_seeds, metavar="N",
                        help=f"seeds to train, one run folder each (default: {' '.join(map(str, default_seeds))})")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE",
                        help="a notebook parameter that is not a training flag, e.g. --param probe_epochs=20 "
                             "(repeatable)")
    parser.add_argument("--results", action="store_true",
                        help="write into results/DATASET (the committed report) instead of runs/study/DATASET")
    parser.add_argument("--out", help="output folder (default: runs/study/DATASET, or results/DATASET with --results)")
    parser.add_argument("--note", help="a line the report shows beside the numbers, e.g. where the data came from")
    parser.add_argument("--notebooks", help="folder holding the notebooks (default: the repository's notebooks/)")
    parser.add_argument("--kernel", help="Jupyter kernel name (default: one installed for this interpreter)")


# ----------------------------------------------------------------------------------------------
# Commands


def _pretrain(args: argparse.Namespace) -> int:
    from sclib.run.lifecycle import seed_configs
    from sclib.train import pretrain_seeds

    cfg = recipe_from_args(args).resolve()  # the one resolution of this command's runs
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if cfg.adapted:
        _log(f"sclib: {cfg.preset} recipe fitted to the data: {cfg.adapted}")
    rows = pretrain_seeds(seed_configs(cfg, args.seeds), progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(_table(rows, ("run", "epoch", "acc", "nmi", "ami", "ari", "clusters_used")))
    return 0


def _one_run_for_checkpoint(args: argparse.Namespace) -> None:
    """``--checkpoint`` is one run's file: with a folder of several seed runs it would score that
    one run's weights into every seed's eval.json and probe.csv."""
    from sclib.run.paths import run_folders

    if args.checkpoint is None:
        return
    runs = run_folders(args.run)
    if len(runs) > 1:
        raise ConfigError(f"--checkpoint names one run's file but --run {args.run} holds {len(runs)} seed runs; "
                          f"pass --run with the run folder the checkpoint belongs to (e.g. --run {runs[0]})")


def _evaluate(args: argparse.Namespace) -> int:
    from sclib.eval.evaluate import evaluate_runs

    _one_run_for_checkpoint(args)
    rows = evaluate_runs(args.run, args.checkpoint, args.device)
    print(_table(rows, ("run", "epoch", "what", "acc", "nmi", "ami", "ari", "clusters_used")))
    return 0


def _probe(args: argparse.Namespace) -> int:
    from sclib.eval.probe import ProbeNotConverged, probe_runs

    if args.epochs <= 0:
        raise ConfigError(f"--epochs must be positive, got {args.epochs}")
    _one_run_for_checkpoint(args)
    with warnings.catch_warnings(record=True) as caught:  # one line each, not Python's file:line form
        warnings.simplefilter("always", ProbeNotConverged)
        rows = probe_runs(args.run, args.checkpoint, args.all_kept, args.epochs, args.device)
    for warning in caught:
        if issubclass(warning.category, ProbeNotConverged):
            print(f"probe: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(_table(rows, ("run", "epoch", "probe", "top1", "top3")))
    return 0


def _refine(args: argparse.Namespace) -> int:
    from sclib.eval.refine import refine_run
    from sclib.run.paths import run_folders

    settings = RefineSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RefineSettings)})
    rows = []
    for run in run_folders(args.run):
        record = refine_run(run, settings, args.device, progress=not args.no_progress)
        for what, key in (("Self-Classifier", "first_stage"), ("+ neighbour consistency", "scored"),
                          ("+ self-labelling", "self_label")):
            if key in record and not record[key].get("skipped"):
                rows.append({"run": str(run), "what": what, **record[key]})
    print(_table(rows, ("run", "what", "acc", "nmi", "ami", "ari", "clusters_used")))
    return 0


def _study(args: argparse.Namespace) -> int:
    from sclib.report.study import render_study, run_study

    out = _study_out(args)
    if args.runs:
        if recipe_from_args(args).overrides or args.config or args.preset or args.dataset:
            raise ConfigError("--runs renders finished runs with their own recipe; drop the training flags")
        folder = render_study(args.runs, out, args.param, args.notebooks, args.kernel, note=args.note, log=_log)
    else:
        folder = run_study(recipe_from_args(args), args.seeds, out, args.param, args.notebooks, args.kernel,
                           note=args.note, log=_log)
    _log(f"study: report in {folder / 'index.html'}, summary in {folder / 'summary.md'}")
    _refresh_front(folder, args.results)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from sclib.report.study import run_sweep_study

    folder = run_sweep_study(recipe_from_args(args), args.grid, args.seeds, _study_out(args), args.param,
                             args.notebooks, args.kernel, note=args.note, log=_log)
    _log(f"sweep: report in {folder / '06_ablations.html'}")
    _refresh_front(folder, args.results)
    return 0


def _front(args: argparse.Namespace) -> int:
    from sclib.report.front import write_front

    for path in write_front(args.results, args.readme):
        _log(f"front: wrote {os.path.relpath(path)}")
    return 0


def _refresh_front(study: str | os.PathLike[str], results: bool) -> None:
    """A study written among the committed ones (``--results``, or a folder whose parent already
    has a front page) appears on the front page at once."""
    from pathlib import Path

    from sclib.report.front import is_front_page, write_front

    parent = Path(study).resolve().parent
    if results or is_front_page(parent / "index.html"):
        for path in write_front(parent):
            _log(f"front: wrote {os.path.relpath(path)}")


def _study_out(args: argparse.Namespace) -> str:
    if args.out:
        return args.out
    dataset = args.dataset or "digits"
    return f"results/{dataset}" if args.results else f"runs/study/{dataset}"


COMMANDS = {"pretrain": _pretrain, "evaluate": _evaluate, "probe": _probe, "refine": _refine, "study": _study,
            "sweep": _sweep, "front": _front}


def _table(rows: list[dict[str, typing.Any]], columns: tuple[str, ...]) -> str:
    """A plain aligned table: fractions shown as percent, the rest as given."""
    columns = tuple(c for c in columns if any(c in r for r in rows))
    cells = [[_cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines)


def _cell(column: str, value: typing.Any) -> str:
    """Metrics in percent as every table shows them; None (a step the data was too small for, its
    warning says why) as "n/a", as in summary.md."""
    from sclib.report.tables import pct

    if column in ("acc", "nmi", "ami", "ari", "top1", "top3") and (value is None or isinstance(value, float)):
        return pct(value)
    return str(value)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can fix; they end in one line, not a traceback."""
    from sclib.data import DataError
    from sclib.eval.evaluate import EvaluationError
    from sclib.run.checkpoint import CheckpointError
    from sclib.run.files import RunFolderError, UnreadableFileError
    from sclib.train import NonFiniteLossError

    return (ConfigError, DataError, CheckpointError, RunFolderError, NonFiniteLossError, EvaluationError,
            UnreadableFileError, FileNotFoundError)


def _one_line(err: BaseException) -> str:
    """Messages that list files over several lines still end as one line on stderr."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Every argument that names a file or folder, checked before any command reads or writes.
PATH_ARGS = ("out", "run", "runs", "config", "checkpoint", "grid", "results", "readme", "notebooks", "data_root")

# What SLURM, Kubernetes and systemd (SIGTERM) or a closed terminal (SIGHUP) send to stop a job:
# each ends a command as Ctrl-C does, through KeyboardInterrupt, so the atomic writes clean up,
# the same line is printed and the exit status is 130.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _check_paths(args: argparse.Namespace) -> None:
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        problem = value and not isinstance(value, bool) and path_problem(value, f"--{name.replace('_', '-')}")
        if problem:
            raise ConfigError(problem)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_signals_interrupt() -> typing.Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise KeyboardInterrupt (as SIGINT does); the
    handlers before are restored after. Only the main thread can set handlers: elsewhere
    (a test runner's worker thread) the signals keep theirs."""
    try:
        previous = {s: signal.signal(s, _interrupt) for s in STOP_SIGNALS}
    except ValueError:
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def study_errors() -> tuple[type[BaseException], ...]:
    """A study or sweep that could not go on (exit 1); imported only once an error is raised,
    since ``sclib.report.study`` imports torch and --help should not wait for it."""
    from sclib.report.study import StudyError

    return (StudyError,)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        with _stop_signals_interrupt():
            _check_paths(args)
            return COMMANDS[args.command](args)
    except expected_errors() as err:
        print(f"sclib: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except study_errors() as err:
        print(f"sclib: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sclib: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
