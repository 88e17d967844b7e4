"""Image folders (DATA_ROOT/train/<class>/*, DATA_ROOT/test/<class>/*): scanned, decoded to 8 bits a
channel, made square, and summarised for adaptive recipes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sclib.data.common import DataError, DataSplits, _make_splits, _resolve_root

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def _scan_split(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise DataError(
            f"Image folder split {split_dir} does not exist. Expected the layout "
            f"<data_root>/train/<class>/<image> and <data_root>/test/<class>/<image>."
        )
    found: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(_walk_images(class_dir, frozenset({split_dir.resolve()})))
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)}). "
                            "Add images or remove the folder.")
        found[class_dir.name] = files
    return found


def _walk_images(folder: Path, ancestors: frozenset[Path]) -> Iterator[Path]:
    """Every image file under ``folder``, at any depth: one rule for the whole tree.

    Hidden entries (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.png``) are skipped at every depth,
    since tools leave them anywhere. Linked folders and files are followed, as torchvision's
    ImageFolder does (``os.walk(followlinks=True)``), except a folder whose real path is one of
    its own ancestors' (a link loop), which would otherwise never end.
    """
    real = folder.resolve()
    if real in ancestors:
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk_images(entry, ancestors | {real})
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            yield entry


def _open_image(path: Path, decode: bool = True):
    """An opened image; ``decode=False`` reads only its header (size and mode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        if decode:
            img.load()
    except Image.DecompressionBombError as exc:  # Pillow's guard: more than 2 x MAX_IMAGE_PIXELS pixels
        raise DataError(f"Cannot read image {path}: Pillow refuses it as a possible decompression bomb ({exc}). "
                        "Shrink it (this study resizes every image to --image-size anyway) or remove it.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"Cannot read image {path}: {exc}. Remove or replace the file.") from exc
    return img


# How each Pillow mode that an accepted file can open in becomes 8 bits a channel. Pillow's own
# convert() clips rather than scales wide modes (a 16-bit grey PNG becomes black and white), so
# 16-bit grey is divided by 257 (65535 -> 255) here; modes without a fixed range are refused.
GREY_MODES = ("1", "L", "LA", "La")


GREY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB")


# Mode "I" (32-bit integers) is how Pillow opens 16-bit PGM/PPM files (scaled to 0..65535 from
# their maxval) and older Pillows 16-bit PNGs; from any other format its range is unknown.
SIXTEEN_BIT_I_FORMATS = ("PNG", "PPM")


def pixel_mode(img, path: Path) -> str:
    """"L" or "RGB": what an opened image becomes, read from its header; DataError if neither.

    Raises DataError naming the file and the mode for modes with no fixed range (floats,
    32-bit integers), which no scaling could map onto 8 bits without guessing.
    """
    if img.mode in GREY_MODES or img.mode in GREY_16BIT_MODES:
        return "L"
    if img.mode == "I" and img.format in SIXTEEN_BIT_I_FORMATS:
        return "L"
    if img.mode in COLOUR_MODES:
        return "RGB"
    raise DataError(f"Cannot use image {path}: its pixel mode {img.mode!r} ({img.format}) has no fixed range to "
                    "scale to 8 bits; save it as 8- or 16-bit grayscale or 8-bit RGB.")


def folder_channels(modes: Sequence[str]) -> int:
    """1 when every image of a folder is grayscale, else 3: the recipe and the loader both ask this."""
    return 1 if all(m == "L" for m in modes) else 3


def _as_8bit(img, path: Path, mode: str):
    """The image in ``mode`` ("L" or "RGB") with its full range scaled to 0..255."""
    from PIL import Image

    if img.mode in GREY_16BIT_MODES or img.mode == "I":
        wide = np.asarray(img, dtype=np.float64)
        if wide.min() < 0 or wide.max() > 65535:
            raise DataError(f"Cannot use image {path}: its mode {img.mode!r} holds values outside 0..65535, "
                            "so it is not 16-bit grayscale; save it as 8- or 16-bit grayscale.")
        img = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8), "L")
    elif img.mode == "La":
        img = img.convert("LA")  # Pillow converts premultiplied grey only to LA
    return img.convert(mode)


@dataclass(frozen=True)
class FolderSummary:
    """What a recipe can know about an image folder without decoding every image."""

    classes: tuple[str, ...]
    train_images: int
    test_images: int
    channels: int       # 1 when every image (train and test) is grayscale, as the loader decides
    native_size: int    # the median longer side of the sampled images, in pixels
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images found


def summarize_image_folder(data_root: str | Path, sample: int = 64) -> FolderSummary:
    """Count an ImageFolder's images, read every image's mode and the size of an evenly spread sample.

    Every header is read (not only a sample's) because one colour image anywhere makes the
    loader load the whole folder in colour, and the recipe must record what is loaded.
    """
    root = _resolve_root(data_root, must_exist=True)
    train, test = _scan_split(root / "train"), _scan_split(root / "test")
    classes = _check_folder_classes(root, train, test)
    files = [p for paths in train.values() for p in paths]
    every = files + [p for paths in test.values() for p in paths]
    picked = set(files[:: max(1, len(files) // sample)][:sample])
    sizes, modes = [], []
    for path in every:
        img = _open_image(path, decode=False)
        modes.append(pixel_mode(img, path))
        if path in picked:
            sizes.append(max(img.size))
    counts = {split: {c: len(paths) for c, paths in found.items()}
              for split, found in (("train", train), ("test", test))}
    return FolderSummary(classes, len(files), len(every) - len(files), folder_channels(modes), int(np.median(sizes)),
                         counts)


def _load_image_folder(root: Path, image_size: int | None) -> DataSplits:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}.")
    train, test = _scan_split(root / "train"), _scan_split(root / "test")
    classes = _check_folder_classes(root, train, test)
    labelled = {
        split: [(path, classes.index(c)) for c, paths in found.items() for path in paths]
        for split, found in (("train", train), ("test", test))
    }
    images = {split: [(path, _open_image(path)) for path, _ in items] for split, items in labelled.items()}
    every = [pair for pairs in images.values() for pair in pairs]
    mode = "L" if folder_channels([pixel_mode(im, path) for path, im in every]) == 1 else "RGB"
    size = image_size or _common_square_size(every)
    arrays = {split: _to_array(pairs, mode, size) for split, pairs in images.items()}
    labels = {split: [y for _, y in items] for split, items in labelled.items()}
    return _make_splits("imagefolder", classes, arrays["train"], labels["train"], arrays["test"], labels["test"])


def _check_folder_classes(root: Path, train: dict, test: dict) -> tuple[str, ...]:
    layout = "Expected <data_root>/train/<class>/<image> and <data_root>/test/<class>/<image>."
    classes = tuple(train)  # folder names, sorted by _scan_split
    if not classes:
        raise DataError(f"No class folders with images under {root / 'train'}. {layout}")
    if len(classes) < 2:
        raise DataError(f"Only one class ({classes[0]!r}) under {root / 'train'}; "
                        "clustering needs at least two classes.")
    if not test:
        raise DataError(f"No class folders with images under {root / 'test'}. {layout}")
    unknown = sorted(set(test) - set(classes))
    if unknown:
        raise DataError(f"Test classes {unknown} under {root / 'test'} have no folder under {root / 'train'}; "
                        "train and test must use the same class folders.")
    return classes


def _common_square_size(images: list) -> int:
    sizes: dict[tuple[int, int], Path] = {}
    for path, im in images:
        sizes.setdefault(im.size, path)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(f"Images differ in size ({p1}: {s1[0]}x{s1[1]}, {p2}: {s2[0]}x{s2[1]}). "
                        "Pass image_size (CLI --image-size) to resize all images to one square size.")
    (w, h), path = next(iter(sizes.items()))
    if w != h:
        raise DataError(f"Images are {w}x{h}, not square (e.g. {path}). Pass image_size to resize them to a square.")
    return w


def _to_array(images: list, mode: str, size: int) -> np.ndarray:
    """``(path, image)`` pairs as uint8 [N, C, size, size], every image in ``mode`` at full range."""
    from PIL import Image

    channels = 1 if mode == "L" else 3
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, (path, im) in enumerate(images):
        im = _as_8bit(im, path, mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out
