"""The ablation sweep: one run folder per variant of a grid, resumable, tabulated like Table 2."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sclib import seed as seed_report
from sclib.config import Config, ConfigError
from sclib.report import run_config

# The grid notebook 06 builds when it finds no sweep: three variants that finish in a minute.
TINY_GRID: dict[str, Any] = {
    "base": {"image_size": 8, "mlp_hidden": 128},
    "variants": {"base": {}, "batch 128": {"batch_size": 128}, "heads 1 x 10": {"heads": [10]}},
}


@dataclass(frozen=True)
class Variant:
    name: str
    folder: str
    cfg: Config


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
        return json.loads(json.dumps(TINY_GRID))
    if isinstance(grid, (str, Path)):
        path = Path(grid)
        if not path.exists():
            raise FileNotFoundError(f"ablation grid {path} does not exist; see ablations.yaml for an example")
        try:
            data = yaml.safe_load(path.read_text())
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


def sweep_variants(dataset: str, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
                   preset: str = "fast", **overrides: Any) -> list[Variant]:
    """Every variant's validated config; precedence: preset < grid base < overrides < variant.

    All configs are checked before any training starts, so a typo in the last variant does not
    surface hours into a sweep.
    """
    spec = load_grid(grid)
    chosen = {k: v for k, v in overrides.items() if v is not None}
    variants, folders = [], {}
    for name, values in spec["variants"].items():
        folder = slug(name)
        if folder in folders:
            raise ConfigError(f"variants {folders[folder]!r} and {name!r} would share the folder {folder}; rename one")
        folders[folder] = name
        try:
            cfg = run_config(dataset, preset, Path(sweep_dir) / folder, **{**spec["base"], **chosen, **values})
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: {err}") from None
        variants.append(Variant(name, folder, cfg))
    return variants


def is_finished(run_dir: str | Path, epochs: int) -> bool:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return False
    try:
        return int(json.loads(path.read_text()).get("epoch", 0)) >= epochs
    except (ValueError, OSError):
        return False


def run_sweep(dataset: str, grid: str | Path | dict[str, Any] | None, sweep_dir: str | Path,
              preset: str = "fast", progress: bool = False, log=print, **overrides: Any) -> list[dict[str, Any]]:
    """Pre-train every variant in its own run folder, skipping finished ones (rerun to resume)."""
    from sclib.files import write_json
    from sclib.train import pretrain

    sweep_dir = Path(sweep_dir)
    variants = sweep_variants(dataset, grid, sweep_dir, preset, **overrides)
    write_json(sweep_dir / "sweep.json", {
        "dataset": dataset, "preset": preset,
        "variants": [{"name": v.name, "folder": v.folder, "config": v.cfg.to_dict()} for v in variants],
    })
    done = []
    for v in variants:
        if is_finished(v.cfg.out, v.cfg.epochs):
            status = "skipped (finished)"
        else:
            start = time.perf_counter()
            pretrain(v.cfg, progress=progress)
            status = f"trained in {time.perf_counter() - start:.0f} s"
        log(f"sweep: {v.name} -> {v.folder}: {status}")
        done.append({"variant": v.name, "folder": v.folder, "status": status})
    return done


def ablation_table(sweep_dir: str | Path):
    """One row per finished variant (fractions), in the grid's order, with the seed's ACC."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    index = sweep_dir / "sweep.json"
    if not index.exists():
        raise FileNotFoundError(f"{index} does not exist; run the sweep first: python -m sclib sweep --grid ablations.yaml")
    rows = []
    for v in json.loads(index.read_text())["variants"]:
        metrics = sweep_dir / v["folder"] / "metrics.json"
        if not metrics.exists():
            continue
        m = json.loads(metrics.read_text())
        seed_row = seed_report.TABLE2.get(v["name"], {})
        rows.append({"variant": v["name"], **{k: float(m[k]) for k in seed_report.METRICS},
                     "epochs": int(m.get("epoch", 0)),
                     "seed_acc": seed_row["acc"] / 100.0 if seed_row else float("nan")})
    if not rows:
        raise FileNotFoundError(f"no variant in {sweep_dir} has finished (no metrics.json); run the sweep first")
    return pd.DataFrame(rows)


def ablation_markdown(table) -> str:
    """The sweep in the layout of the seed's Table 2 (percent), with the seed's STL-10 ACC."""
    lines = ["| variant | NMI | AMI | ARI | ACC | epochs | seed ACC (STL-10, 300 ep) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        seed_acc = "n/a" if not np.isfinite(r["seed_acc"]) else f"{100 * r['seed_acc']:.2f}"
        lines.append(f"| {r['variant']} | " + " | ".join(f"{100 * r[k]:.2f}" for k in seed_report.METRICS)
                     + f" | {int(r['epochs'])} | {seed_acc} |")
    return "\n".join(lines) + "\n"


def seed_table2_markdown() -> str:
    lines = ["| variant | NMI | AMI | ARI | ACC |", "|---|---:|---:|---:|---:|"]
    for name, row in seed_report.TABLE2.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in seed_report.METRICS) + " |")
    return "\n".join(lines) + "\n"


