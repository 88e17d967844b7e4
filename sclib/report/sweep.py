"""The ablation sweep: one folder per variant of a grid, one run per seed inside, resumable;
``sclib.report.ablations`` tabulates it like the seed's Table 2."""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib import train
from sclib.run.config import Config, ConfigError, Recipe
from sclib.run.files import UnreadableFileError, read_text, write_json
from sclib.run.lifecycle import check_resumable, seed_configs
from sclib.run.paths import RunPaths
from sclib.run.records import finished_metrics

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
            base = recipe.resolve(under=spec["base"], over={**values, "out": str(Path(sweep_dir) / folder)})
            configs = tuple(seed_configs(base, list(seeds)))
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
