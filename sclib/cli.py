"""``python -m sclib``: pretrain, evaluate, probe, study and sweep, with one error style.

Every expected failure (bad parameter, missing data, damaged checkpoint, unwritable folder)
ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

from sclib.config import HELP, PRESETS, Config, ConfigError, coerce, make_config


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line in the same style as every other error, and a
    flag must be spelled out (``--epoch`` silently meaning ``--epochs`` hides typos)."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"sclib: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, named as in config.json and the notebooks' parameters."""
    hints = typing.get_type_hints(Config)
    defaults = Config()
    parser.add_argument("--preset", choices=PRESETS, default="fast",
                        help="fast: tuned for a CPU; seed: the seed report's recipe (default: fast)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        help_text = f"{HELP[f.name]} (fast-preset default for digits: {getattr(defaults, f.name)})"
        if hint is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is list:
            parser.add_argument(flag, dest=f.name, nargs="+", default=None, metavar="V", help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace) -> Config:
    hints = typing.get_type_hints(Config)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    values = {k: coerce(k, v, hints[k]) for k, v in values.items() if v is not None}
    dataset = values.pop("dataset", "digits")
    return make_config(dataset, args.preset, **values)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sclib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pre-train (or resume) a run", description="Pre-train a Self-Classifier; rerun to resume.")
    _add_config_flags(pre)
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="clustering metrics of every head and k-means baselines into eval.json")
    ev.add_argument("--run", required=True, help="run folder")
    ev.add_argument("--checkpoint", help="checkpoint file (default: the newest)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    pr = sub.add_parser("probe", help="linear and kNN probes on frozen features into probe.csv")
    pr.add_argument("--run", required=True, help="run folder")
    pr.add_argument("--checkpoint", help="checkpoint file (default: the newest)")
    pr.add_argument("--all-milestones", action="store_true", help="probe every milestone checkpoint")
    pr.add_argument("--epochs", type=int, default=100, help="linear probe epochs (default 100)")
    pr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    try:
        from sclib import study
    except ImportError:  # the study runner needs papermill; the engine does not
        study = None
    if study is not None:
        study.add_commands(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "pretrain":
        from sclib.train import pretrain

        metrics = pretrain(config_from_args(args), progress=not args.no_progress)
        if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
            print(json.dumps(metrics, indent=2))
    elif args.command == "evaluate":
        from sclib.evaluate import evaluate_run

        report = evaluate_run(args.run, args.checkpoint, args.device)
        print(json.dumps(report, indent=2))
    elif args.command == "probe":
        from sclib.probe import probe_run

        if args.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {args.epochs}")
        rows = probe_run(args.run, args.checkpoint, args.all_milestones, args.epochs, args.device)
        print(json.dumps(rows, indent=2))
    else:
        return args.handler(args)
    return 0


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can fix; they end in one line, not a traceback."""
    from sclib.checkpoint import CheckpointError
    from sclib.data import DataError
    from sclib.files import RunFolderError
    from sclib.train import NonFiniteLossError

    return (ConfigError, DataError, CheckpointError, RunFolderError, NonFiniteLossError, FileNotFoundError)


def _one_line(err: BaseException) -> str:
    """Messages that list files over several lines still end as one line on stderr."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except expected_errors() as err:
        print(f"sclib: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sclib: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
