"""The ablation sweep's table, read from its folders: one row per variant, mean and standard
deviation over seeds, beside the seed's Table 2. Reads only (no torch): the front page and
notebook 06 use it; ``sclib.report.sweep`` trains the grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sclib import seed_report
from sclib.report.tables import Link, Table, pct
from sclib.run.config import ConfigError, differences, from_dict, load_config
from sclib.run.files import read_record
from sclib.run.paths import RunPaths, seed_folder
from sclib.run.records import read_metrics


def ablation_table(sweep_dir: str | Path):
    """One row per variant with finished seeds: its folder, the mean and std of each metric (fractions), the
    seeds' ACC values, and the seed report's ACC for the same variant."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    index = sweep_dir / "sweep.json"
    if not index.exists():
        raise FileNotFoundError(
            f"{index} does not exist; run the sweep first: python -m sclib sweep --grid ablations.yaml"
        )
    spec = read_record(index, ("variants", "seeds"), "rerun the sweep (it resumes) to write it again")
    rows = []
    for v in spec["variants"]:
        found = [read_metrics(paths) for paths in variant_runs(sweep_dir, v, spec["seeds"])]
        if not found:
            continue
        report_row = seed_report.TABLE2.get(v["name"], {})
        row = {"variant": v["name"], "folder": v["folder"], "seeds": len(found),
               "epochs": int(found[0].get("epoch", 0)),
               "acc_per_seed": [float(m["acc"]) for m in found],
               "seed_report_acc": report_row["acc"] / 100.0 if report_row else float("nan")}
        for k in seed_report.METRICS:
            values = np.array([float(m[k]) for m in found])
            row[k] = float(values.mean())
            row[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no variant in {sweep_dir} has finished (no metrics.json); run the sweep first")
    return pd.DataFrame(rows)


def variant_runs(sweep_dir: Path, variant: dict[str, Any], seeds: list[int]) -> list[RunPaths]:
    """A variant's finished seed runs, each checked against the values sweep.json records for the
    variant (ConfigError when a folder holds a run of other values)."""
    runs = [RunPaths(seed_folder(sweep_dir / variant["folder"], s)) for s in seeds]
    runs = [paths for paths in runs if paths.metrics.exists()]
    recorded = variant.get("config")
    if not isinstance(recorded, dict) or not recorded:
        return runs  # a sweep.json that records no values (hand-made) is taken as it is
    expected = from_dict(recorded)
    for paths in runs:
        if not paths.config.exists():
            continue
        diffs = {k: v for k, v in differences(load_config(paths.config), expected).items() if k != "seed"}
        if diffs:
            listed = ", ".join(f"{k} {a!r} in the run, {b!r} in the grid" for k, (a, b) in diffs.items())
            raise ConfigError(f"{paths.root} holds a run of other values than sweep.json records for variant "
                              f"{variant['name']!r} ({listed}); rerun the sweep, which refuses it, and rename "
                              "the variant")
    return runs


def ablation_rows(table, link=None) -> Table:
    """The sweep in the layout of the seed's Table 2 (percent, mean ± std over seeds), with the
    seed's STL-10 ACC; ``link(variant folder name)`` turns the variant names into links."""
    rows = []
    for _, r in table.iterrows():
        name = r["variant"] if link is None else Link(r["variant"], link(r["folder"]))
        rows.append([name, str(int(r["seeds"])), *(pct(r[k], r[f"{k}_std"]) for k in seed_report.METRICS),
                     ", ".join(f"{100 * a:.1f}" for a in r["acc_per_seed"]), pct(r["seed_report_acc"])])
    report_column = f"seed ACC ({seed_report.TABLE2_NAME}, {seed_report.TABLE2_EPOCHS} ep)"
    return Table(["variant", "seeds", "NMI", "AMI", "ARI", "ACC", "ACC per seed", report_column],
                 rows, align="lrrrrrlr")


def ablation_markdown(table) -> str:
    """:func:`ablation_rows` as Markdown (notebook 06)."""
    return ablation_rows(table).markdown()


def seed_table2_markdown() -> str:
    lines = ["| variant | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    for name, row in seed_report.TABLE2.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in seed_report.METRICS) + " |")
    return "\n".join(lines) + "\n"
