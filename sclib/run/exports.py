"""What a study commits of each run, in plain formats: no archive, no pickle, readable without numpy.

* ``arrays.json``: every head's cluster of every eval image (``assigned`` [H][N]), the labels [N],
  the head sizes [H] and the eval indices of the sample images [K];
* ``samples.png``: those K sample images (uint8, C = 1 or 3, h x w each), as one lossless mosaic
  of :data:`MOSAIC_COLUMNS` images a row, in order; ``arrays.json`` records their shape;
* ``embeddings.json``: the 2-D t-SNE / UMAP points notebook 04 drew, with what they were made from.

Numbers go out as JSON numbers: integers exactly, float32 coordinates through Python floats (a
float32 round-trips through a double exactly). Files are written atomically, the mosaic first, so a
readable ``arrays.json`` always has its images. Reading checks every key and shape and refuses a
damaged file in one line (UnreadableFileError) that says how to make it again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from sclib.run.files import UnreadableFileError, first_line, read_json, write_bytes, write_json

MOSAIC_COLUMNS = 10
ARRAY_KEYS = ("labels", "assigned", "head_sizes", "sample_index", "sample_shape")


def write_arrays(path: Path, samples_path: Path, labels: np.ndarray, assigned: np.ndarray,
                 head_sizes: list[int], sample_index: np.ndarray, sample_images: np.ndarray) -> Path:
    """Write ``samples_path`` (the mosaic of ``sample_images`` uint8 [K, C, h, w]), then ``path``."""
    images = np.asarray(sample_images, dtype=np.uint8)
    write_bytes(samples_path, _png(_mosaic(images)))
    return write_json(path, {
        "labels": np.asarray(labels, dtype=np.int64).tolist(),
        "assigned": np.asarray(assigned, dtype=np.int64).tolist(),
        "head_sizes": [int(s) for s in head_sizes],
        "sample_index": np.asarray(sample_index, dtype=np.int64).tolist(),
        "sample_shape": list(images.shape),
    }, indent=None)


def read_arrays(path: Path, samples_path: Path, fix: str) -> dict[str, np.ndarray]:
    """``labels`` int64 [N], ``assigned`` int64 [H, N], ``head_sizes`` int64 [H], ``sample_index``
    int64 [K] and ``sample_images`` uint8 [K, C, h, w]; UnreadableFileError (or FileNotFoundError)
    naming the file otherwise, with ``fix``."""
    data = read_json(path, fix)
    missing = [k for k in ARRAY_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise UnreadableFileError(f"{path} is damaged or from another version (it lacks {', '.join(missing)}); "
                                  f"{fix}")
    try:
        arrays = {k: np.asarray(data[k], dtype=np.int64) for k in ARRAY_KEYS if k != "sample_shape"}
        shape = tuple(int(s) for s in data["sample_shape"])
    except (TypeError, ValueError) as err:
        raise UnreadableFileError(f"{path} is damaged ({first_line(err)}); {fix}") from None
    labels, assigned = arrays["labels"], arrays["assigned"]
    if assigned.ndim != 2 or assigned.shape[1] != labels.size or len(shape) != 4 \
            or shape[0] != arrays["sample_index"].size:
        raise UnreadableFileError(f"{path} is damaged: its arrays do not fit together; {fix}")
    arrays["sample_images"] = _unmosaic(_read_png(samples_path, fix), shape, samples_path, fix)
    return arrays


def write_embeddings(path: Path, values: dict[str, np.ndarray]) -> Path:
    """``embeddings.json``: every value (a scalar, a string or an array) under its name, with its dtype.

    A float32 goes out as its shortest decimal that reads back to the same float32 (numpy's
    unique repr, about 9 characters, not a double's 17): exact, at half the size.
    """
    arrays = {name: np.asarray(v) for name, v in values.items()}
    return write_json(path, {name: {"dtype": a.dtype.str, "shape": list(a.shape), "value": _listed(a)}
                             for name, a in arrays.items()}, indent=None)


def _listed(array: np.ndarray) -> Any:
    if array.dtype != np.float32:
        return array.tolist()
    shortest = [float(np.format_float_positional(x, unique=True)) for x in array.ravel()]
    return np.asarray(shortest, dtype=np.float64).reshape(array.shape).tolist()


def read_embeddings(path: Path) -> dict[str, np.ndarray]:
    """The values :func:`write_embeddings` wrote, with their dtypes; {} if the file is missing or
    damaged (it is a cache of drawings: notebook 04 makes a damaged one again)."""
    try:
        data = json.loads(path.read_text())
        return {name: np.asarray(v["value"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
                for name, v in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _mosaic(images: np.ndarray) -> np.ndarray:
    """[K, C, h, w] -> one [rows * h, MOSAIC_COLUMNS * w, C] image, row by row, zeros after the last."""
    k, c, h, w = images.shape
    rows = max(1, -(-k // MOSAIC_COLUMNS))
    out = np.zeros((rows * h, MOSAIC_COLUMNS * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, MOSAIC_COLUMNS)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = image.transpose(1, 2, 0)
    return out


def _unmosaic(mosaic: np.ndarray, shape: tuple[int, ...], path: Path, fix: str) -> np.ndarray:
    k, c, h, w = shape
    if mosaic.ndim == 2:
        mosaic = mosaic[:, :, None]
    rows = max(1, -(-k // MOSAIC_COLUMNS))
    if mosaic.shape != (rows * h, MOSAIC_COLUMNS * w, c):
        raise UnreadableFileError(f"{path} is {mosaic.shape[1]} x {mosaic.shape[0]} px with {mosaic.shape[2]} "
                                  f"channel(s), not the mosaic of {k} images of {c} x {h} x {w}; {fix}")
    return np.stack([mosaic[(i // MOSAIC_COLUMNS) * h:(i // MOSAIC_COLUMNS + 1) * h,
                            (i % MOSAIC_COLUMNS) * w:(i % MOSAIC_COLUMNS + 1) * w].transpose(2, 0, 1)
                     for i in range(k)]) if k else np.zeros((0, c, h, w), dtype=np.uint8)


def _png(mosaic: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mosaic[:, :, 0] if mosaic.shape[2] == 1 else mosaic).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _read_png(path: Path, fix: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {fix}")
    try:
        with Image.open(path) as image:
            image.load()
            mode, pixels = image.mode, np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UnreadableFileError(f"{path} is damaged ({type(err).__name__}: {first_line(err)}); {fix}") from None
    if mode not in ("L", "RGB"):
        raise UnreadableFileError(f"{path} is a {mode} image, not the grey or RGB mosaic evaluate writes; {fix}")
    return pixels
