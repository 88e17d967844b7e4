"""The ablation sweep: one folder per variant of a grid, one run per seed inside, resumable,
tabulated like the seed's Table 2 (mean and standard deviation over seeds)."""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sclib import seed_report, train
from sclib.config import Config, ConfigError, Recipe, differences, from_dict, load_config
from sclib.files import UnreadableFileError, read_record, read_text, write_json
from sclib.runs import RunPaths, check_resumable, finished_metrics, read_metrics, seed_folder
from sclib.tables import Link, Table, pct

# The grid notebook 06 builds when it finds no sweep: three variants that finish in a minute.
TINY_GRID: dict[str, Any] = {
    "base": {"image_size": 8, "mlp_hidden": 128},
    "variants": {"base": {}, "batch 128": {"batch_size": 128}, "heads 1 x 10": {"heads": [10]}},
}


@dataclass(frozen=True)
class Variant:
    name: str
    folder: str
    configs: tuple[Config, ...]  # one per seed


def slug(name: str) -> str:
    """A variant's folder name: lower-case words joined by dashes ("temperatures-0-07-0-03")."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not text:
        raise ConfigError(f"variant name {name!r} has no letters or digits to name its folder by")
    return text


def load_grid(grid: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """Read and shape-check an ablation grid: ``base`` (shared overrides) and ``variants``."""
    import yaml

    if grid is None:
        return copy.deepcopy(TINY_GRID)
    if isinstance(grid, (str, Path)):
        path = Path(grid)
        if not path.exists():
            raise FileNotFoundError(f"ablation grid {path} does not exist; see ablations.yaml for an example")
        try:
            data = yaml.safe_load(read_text(path, "ablation grid", "see ablations.yaml for an example"))
        except UnreadableFileError as err:
            raise ConfigError(str(err)) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"ablation grid {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        where = str(path)
    else:
        data, where = grid, "ablation grid"
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise ConfigError(f"{where} needs a mapping 'variants: {{name: {{field: value}}}}' with at least one variant")
    extra = sorted(set(data) - {"base", "variants"})
    if extra:
        raise ConfigError(f"{where} has unknown top-level key(s) {extra}; only 'base' and 'variants' are read")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: 'base' must be a mapping of config fields")
    for name, values in data["variants"].items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}: variant {name!r} must be a mapping of config fields (or empty)")
    return {"base": base, "variants": {str(k): (v or {}) for k, v in data["variants"].items()}}


def sweep_variants(recipe: Recipe, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
                   seeds: list[int] = (0,)) -> list[Variant]:
    """Every variant's validated configs; precedence: recipe < grid base < overrides < variant < seed.

    All configs are checked before any training starts, so a typo in the last variant does not
    surface hours into a sweep.
    """
    spec = load_grid(grid)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"a sweep needs distinct seeds, got {list(seeds)}")
    variants, folders = [], {}
    for name, values in spec["variants"].items():
        folder = slug(name)
        if folder in folders:
            raise ConfigError(f"variants {folders[folder]!r} and {name!r} would share the folder {folder}; rename one")
        folders[folder] = name
        try:
            configs = tuple(recipe.resolve(under=spec["base"], over={
                **values, "seed": s, "out": str(seed_folder(Path(sweep_dir) / folder, s))}) for s in seeds)
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: {err}") from None
        variants.append(Variant(name, folder, configs))
    return variants


def run_sweep(recipe: Recipe, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
              seeds: list[int] = (0,), progress: bool | str = False, log=print) -> list[dict[str, Any]]:
    """Pre-train every variant and seed in its own run folder, skipping finished ones (rerun to resume)."""
    sweep_dir = Path(sweep_dir)
    variants = sweep_variants(recipe, grid, sweep_dir, seeds)
    check_variant_folders(variants)  # before sweep.json records the grid, and before "finished" is decided
    write_json(sweep_dir / "sweep.json", {
        "dataset": variants[0].configs[0].dataset, "preset": variants[0].configs[0].preset, "seeds": list(seeds),
        "variants": [{"name": v.name, "folder": v.folder, "config": v.configs[0].to_dict()} for v in variants],
    })
    done = []
    for v in variants:
        for cfg in v.configs:
            if finished_metrics(RunPaths(Path(cfg.out)), cfg.epochs) is not None:
                status = "skipped (finished)"
            else:
                start = time.perf_counter()
                train.pretrain(cfg, progress=progress)
                status = f"trained in {time.perf_counter() - start:.0f} s"
            log(f"sweep: {v.name}, seed {cfg.seed} -> {cfg.out}: {status}")
            done.append({"variant": v.name, "seed": cfg.seed, "folder": cfg.out, "status": status})
    return done


def check_variant_folders(variants: list[Variant]) -> None:
    """Refuse, in one line, a variant whose folder holds a run of other values (the grid changed a
    variant's values but kept its name): "finished" would otherwise report the old run's numbers
    under the new values."""
    for v in variants:
        for cfg in v.configs:
            try:
                check_resumable(cfg, RunPaths(Path(cfg.out)))
            except ConfigError as err:
                raise ConfigError(f"variant {v.name!r}: {err}; a grid that changes a variant's values must "
                                  "also change its name (its folder)") from None


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
        seed_row = seed_report.TABLE2.get(v["name"], {})
        row = {"variant": v["name"], "folder": v["folder"], "seeds": len(found),
               "epochs": int(found[0].get("epoch", 0)),
               "acc_per_seed": [float(m["acc"]) for m in found],
               "seed_acc": seed_row["acc"] / 100.0 if seed_row else float("nan")}
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
                     ", ".join(f"{100 * a:.1f}" for a in r["acc_per_seed"]), pct(r["seed_acc"])])
    seed_column = f"seed ACC ({seed_report.TABLE2_NAME}, {seed_report.TABLE2_EPOCHS} ep)"
    return Table(["variant", "seeds", "NMI", "AMI", "ARI", "ACC", "ACC per seed", seed_column],
                 rows, align="lrrrrrlr")


def ablation_markdown(table) -> str:
    """:func:`ablation_rows` as Markdown (notebook 06)."""
    return ablation_rows(table).markdown()


def seed_table2_markdown() -> str:
    lines = ["| variant | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    for name, row in seed_report.TABLE2.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in seed_report.METRICS) + " |")
    return "\n".join(lines) + "\n"
