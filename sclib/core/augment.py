"""Batched, on-device view augmentations for Self-Classifier.

The official Self-Classifier code builds its views with the BYOL/DINO recipe in torchvision,
one PIL image at a time inside data-loader workers. On small data sets that per-image work
dominates a training step, so this module applies the same recipe to whole uint8 batches
with tensor ops: one ``affine_grid``/``grid_sample`` per view for crop, flip and resize,
broadcast per-sample colour ops, and a separable blur with per-sample kernels. Every random
number comes from one ``torch.rand`` call per view on the caller's generator, so a fixed seed
reproduces a batch exactly and the same CPU generator gives the same views on CPU and CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sclib.core.names import STYLES

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "affine_grid",
    "affine_theta",
    "blur_kernel_size",
    "crop_flip_theta",
    "default_local_size",
    "eval_transform",
    "gaussian_blur",
    "gaussian_kernels",
    "jitter_factors",
    "sample_crop_boxes",
    "to_grayscale",
    "warp",
]

# ITU-R 601 luma weights, the ones torchvision's rgb_to_grayscale uses.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Candidates drawn per image for the resized-crop rejection sampler (torchvision tries 10).
_CROP_TRIES = 10


def default_local_size(image_size: int) -> int:
    """Scale DINO's 96/224 local-to-global ratio to this image size (even, at least 8)."""
    return max(8, 2 * round(image_size * 96 / 224 / 2))


def blur_kernel_size(size: int) -> int:
    """BYOL's blur kernel spans about 10% of the image; it must be odd to have a centre."""
    k = max(3, round(0.1 * size))
    return k if k % 2 == 1 else k + 1


@dataclass(frozen=True)
class AugmentConfig:
    """Everything that fixes the view distribution; defaults follow the official recipe.

    ``style="byol"`` is the BYOL/DINO recipe used by Self-Classifier. ``style="affine"`` is for
    tiny grayscale images such as 8x8 digits, where a resized crop throws away most of the
    signal and a horizontal flip changes the class (a mirrored 7 or 3 is not a digit).
    """

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    style: str = "byol"
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_crops: int = 0
    local_size: int | None = None
    # Random resized crop aspect ratio range (torchvision's default).
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    # Colour jitter strengths in torchvision's ColorJitter convention.
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # Blur probabilities of global view 1, global view 2 and the local crops (asymmetric on purpose).
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    # Solarisation probabilities of global view 1 and 2 (locals are never solarised).
    solarize_p: tuple[float, float] = (0.0, 0.2)
    solarize_threshold: float = 0.5
    # "affine" style: rotation in degrees (+-), isotropic scale range, translation as a
    # fraction of the image size (+-), shear in degrees (+-), and its milder blur.
    affine_degrees: float = 15.0
    affine_scale: tuple[float, float] = (0.85, 1.15)
    affine_translate: float = 0.1
    affine_shear: float = 5.0
    affine_blur_p: float = 0.5
    affine_blur_sigma: tuple[float, float] = (0.1, 1.0)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"AugmentConfig: {msg}")

        if not isinstance(self.image_size, int) or self.image_size < 2:
            bad(f"image_size must be an int >= 2, got {self.image_size!r}")
        if self.channels not in (1, 3):
            bad(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            bad(f"mean and std need one value per channel ({self.channels}), "
                f"got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            bad(f"std values must be > 0, got {self.std}")
        if self.style not in STYLES:
            bad(f"style must be one of {STYLES}, got {self.style!r}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                bad(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            bad(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        if not isinstance(self.local_crops, int) or self.local_crops < 0:
            bad(f"local_crops must be an int >= 0, got {self.local_crops!r}")
        if self.local_size is not None and (not isinstance(self.local_size, int) or self.local_size < 2):
            bad(f"local_size must be None or an int >= 2, got {self.local_size!r}")
        probs = (self.flip_p, self.jitter_p, self.grayscale_p, *self.blur_p, *self.solarize_p,
                 self.affine_blur_p)
        if any(not 0 <= p <= 1 for p in probs):
            bad("every probability (flip_p, jitter_p, grayscale_p, blur_p, solarize_p, "
                "affine_blur_p) must lie in [0, 1]")
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            bad("brightness, contrast, saturation must be >= 0 and hue in [0, 0.5]")
        for name in ("blur_sigma", "affine_blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                bad(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if not 0 < self.affine_scale[0] <= self.affine_scale[1]:
            bad(f"affine_scale must satisfy 0 < low <= high, got {self.affine_scale}")

    @property
    def resolved_local_size(self) -> int:
        return self.local_size if self.local_size is not None else default_local_size(self.image_size)


# ----------------------------------------------------------------------------- geometry


def sample_crop_boxes(u_scale: torch.Tensor, u_ratio: torch.Tensor, u_pos: torch.Tensor,
                      height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float]) -> torch.Tensor:
    """RandomResizedCrop's box sampler for a whole batch at once.

    Same semantics as torchvision (area fraction uniform in ``scale``, log-uniform aspect
    ratio, integer boxes, first of ``T`` tries that fits, else the centre-crop fallback), but
    all tries of all images are drawn together and the first valid one is picked per row.
    ``u_scale`` and ``u_ratio`` are uniforms [N, T]; ``u_pos`` uniforms [N, 2].
    Returns float [N, 4] boxes (top, left, crop_height, crop_width) in pixels.
    """
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u_scale)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first max
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # torchvision draws randint(0, H - h + 1); floor(u * (H - h + 1)) is the same distribution.
    top = torch.floor(u_pos[:, 0] * (height - h + 1))
    left = torch.floor(u_pos[:, 1] * (width - w + 1))

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    ok = valid.any(dim=1)
    h = torch.where(ok, h, float(fh))
    w = torch.where(ok, w, float(fw))
    top = torch.where(ok, top, float((height - fh) // 2))
    left = torch.where(ok, left, float((width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def crop_flip_theta(boxes: torch.Tensor, flip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Affine matrices [N, 2, 3] that make grid_sample do crop + resize (+ horizontal flip).

    With align_corners=False output pixel u of S lands on source pixel
    left + (u + 0.5) * w / S - 0.5, exactly where F.interpolate samples the cropped image.
    """
    top, left, h, w = boxes.unbind(1)
    sx = w / width * torch.where(flip, -1.0, 1.0)
    theta = boxes.new_zeros(boxes.shape[0], 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
                 translate: torch.Tensor) -> torch.Tensor:
    """Inverse-map matrices [N, 2, 3] for a forward rotate/shear/scale/translate about the centre.

    Angles in radians, translate [N, 2] in normalised units (the image spans 2). grid_sample
    needs the output->input map, so the forward 2x2 is inverted in closed form.
    """
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # forward A = scale * R(angle) @ [[1, tan], [0, 1]]
    a = scale * cos
    b = scale * (cos * tan - sin)
    c = scale * sin
    d = scale * (sin * tan + cos)
    det = a * d - b * c
    theta = angle.new_empty(angle.shape[0], 2, 3)
    theta[:, 0, 0] = d / det
    theta[:, 0, 1] = -b / det
    theta[:, 1, 0] = -c / det
    theta[:, 1, 1] = a / det
    tx, ty = translate.unbind(1)
    theta[:, 0, 2] = -(theta[:, 0, 0] * tx + theta[:, 0, 1] * ty)
    theta[:, 1, 2] = -(theta[:, 1, 0] * tx + theta[:, 1, 1] * ty)
    return theta


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """Same grid as ``F.affine_grid(theta, [N, C, size, size], align_corners=False)``.

    Built by broadcasting two 1-D coordinate vectors instead of a batched matmul over a base
    grid: identical values, about 8x faster on CPU where affine_grid costs more than the
    resample itself.
    """
    base = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    bx, by = base.view(1, 1, size), base.view(1, size, 1)
    t = theta.reshape(-1, 6, 1, 1)
    grid = theta.new_empty(theta.shape[0], size, size, 2)
    grid[..., 0] = t[:, 0] * bx + t[:, 1] * by + t[:, 2]
    grid[..., 1] = t[:, 3] * bx + t[:, 4] * by + t[:, 5]
    return grid


def warp(x: torch.Tensor, theta: torch.Tensor, size: int, padding_mode: str = "border") -> torch.Tensor:
    """One bilinear resample of float images [N, C, h, w] to [N, C, size, size]."""
    return F.grid_sample(x, affine_grid(theta, size), mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


# ----------------------------------------------------------------------------- colour
# All colour ops take float images in [0, 1] and per-sample factors [n]; they follow
# torchvision.transforms.functional's float formulas so results are comparable.


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma [N, 1, H, W] of RGB images (single-channel images are their own luma)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: scale towards black. Factor 1 is an exact no-op."""
    return x.mul_(_per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: blend with the image's mean luma. Factor 1 is an exact no-op."""
    f = _per_sample(factor)
    mean = to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return x.mul_(f).add_((1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: blend with the per-pixel luma. Factor 1 is an exact no-op."""
    f = _per_sample(factor)
    gray = to_grayscale(x)
    return x.mul_(f).add_(gray * (1 - f)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """In place: rotate the HSV hue by ``shift`` (fraction of a turn), keeping S and V.

    Hue is computed with torchvision's tie-breaking (red, then green, then blue as maximum);
    the way back uses the closed form channel = V - C * clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6h) mod 6, which equals the six-case HSV->RGB table without building it.
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h6 = torch.where(is_r, (g - b) / safe,
                     torch.where(is_g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h6 = torch.remainder(h6 + 6.0 * _per_sample(shift).squeeze(1), 6.0)
    for n, channel in zip((5.0, 3.0, 1.0), (r, g, b)):
        k = torch.remainder(h6 + n, 6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0, 1)
        channel.copy_(maxc - chroma * ramp)
    return x


def _jitter(x: torch.Tensor, apply: torch.Tensor, factors: torch.Tensor, order_u: torch.Tensor,
            ops: list) -> torch.Tensor:
    """Colour jitter with a random order of ops per sample, like torchvision's ColorJitter.

    Per slot in the order, the batch is sorted by which op each sample runs in that slot, so
    each op runs once on a contiguous slice; samples without jitter sort past the last op.
    Returns images in the original sample order.
    """
    n_ops = len(ops)
    order = order_u.argsort(dim=1)  # uniform random permutation of op ids per sample
    skip = torch.full_like(order[:, 0], n_ops)
    perm = torch.arange(x.shape[0], device=x.device)
    for slot in range(n_ops):
        key = torch.where(apply, order[:, slot], skip)
        idx = key.argsort()
        x, factors, order, apply, perm = x[idx], factors[idx], order[idx], apply[idx], perm[idx]
        counts = torch.bincount(key, minlength=n_ops + 1).tolist()
        start = 0
        for op_id, op in enumerate(ops):
            stop = start + counts[op_id]
            if stop > start:
                op(x[start:stop], factors[start:stop, op_id])
            start = stop
    out = torch.empty_like(x)
    out[perm] = x
    return out


def _jitter_static(x: torch.Tensor, apply: torch.Tensor, factors: torch.Tensor, order_u: torch.Tensor,
                   ops: list) -> torch.Tensor:
    """:func:`_jitter` without a host sync: the same random op order per sample, static shapes.

    Every slot runs every op on the whole batch; a sample that runs another op (or no jitter)
    gets the identity factor 1, an exact no-op for brightness, contrast and saturation. Hue's
    round trip is not exact, so its result is selected per sample instead. About ``len(ops)``
    times the arithmetic of :func:`_jitter`, but no ``bincount().tolist()`` per slot: on a GPU
    that removes a pipeline drain each, and the shapes no longer depend on the data, so the
    augmentation can be compiled and captured in a CUDA graph.
    """
    order = order_u.argsort(dim=1)
    for slot in range(len(ops)):
        for op_id, op in enumerate(ops):
            chosen = apply & (order[:, slot] == op_id)
            if op is adjust_hue:
                x = torch.where(_per_sample(chosen), adjust_hue(x.clone(), factors[:, op_id]), x)
            else:
                op(x, torch.where(chosen, factors[:, op_id], 1.0))
    return x


def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def jitter_factors(u: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample [brightness, contrast, saturation, hue] from uniforms [N, 4], ColorJitter's ranges."""
    return torch.stack([
        _uniform(u[:, 0], max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
        _uniform(u[:, 1], max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
        _uniform(u[:, 2], max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
        _uniform(u[:, 3], -cfg.hue, cfg.hue),
    ], dim=1)


# ----------------------------------------------------------------------------- blur


def gaussian_kernels(sigma: torch.Tensor, ksize: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels [N, ksize], one per sigma (torchvision's sampling)."""
    half = (ksize - 1) / 2
    xs = torch.linspace(-half, half, ksize, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (xs / sigma.view(-1, 1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Separable blur with a different kernel per sample, reflect padding like torchvision.

    A weighted sum of k shifted views per axis: for the small kernels used here (3 to ~23
    taps) this beats a grouped convolution and needs no per-device special casing.
    """
    k = kernels.shape[1]
    r = k // 2
    w = kernels.view(-1, 1, 1, 1, k)
    h_img, w_img = x.shape[-2:]
    xp = F.pad(x, (r, r, 0, 0), mode="reflect")
    out = xp[..., 0:w_img] * w[..., 0]
    for j in range(1, k):
        out.add_(xp[..., j:j + w_img] * w[..., j])
    xp = F.pad(out, (0, 0, r, r), mode="reflect")
    out = xp[..., 0:h_img, :] * w[..., 0]
    for j in range(1, k):
        out.add_(xp[..., j:j + h_img, :] * w[..., j])
    return out


# ----------------------------------------------------------------------------- pipeline

# Column layout of the per-view uniform table (one torch.rand call per view).
_C_SCALE = slice(0, _CROP_TRIES)
_C_RATIO = slice(_CROP_TRIES, 2 * _CROP_TRIES)
_C_POS = slice(2 * _CROP_TRIES, 2 * _CROP_TRIES + 2)
_C = 2 * _CROP_TRIES + 2
_C_FLIP, _C_JIT, _C_FACT, _C_ORDER = _C, _C + 1, slice(_C + 2, _C + 6), slice(_C + 6, _C + 10)
_C_GRAY, _C_BLUR, _C_SIGMA, _C_SOL = _C + 10, _C + 11, _C + 12, _C + 13
_C_AFF = slice(_C + 14, _C + 19)
_N_COLS = _C + 19


def _normalize_(x: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    return x.sub_(mean).mul_(inv_std)


class Augmenter:
    """Callable that turns a uint8 batch into Self-Classifier's views on the batch's device.

    Colour jitter runs its ops in a random order per sample, as torchvision's ColorJitter
    (used by the official code) does, so the view distribution matches the reference.

    ``sync_free=True`` (the sync-free step, Config ``step_mode``) makes the same views (equal up
    to float rounding, from the same random numbers) with static shapes and so without any
    host-device synchronisation: views of one size are augmented as one batch (one
    ``grid_sample`` for both global views) and the colour jitter is :func:`_jitter_static`. The
    trainer uses it on CUDA; the default keeps the CPU path, which does less arithmetic, bit for
    bit as before. ``compile=True`` (needs ``sync_free``) runs that per-size work through
    ``torch.compile``.
    """

    def __init__(self, cfg: AugmentConfig, sync_free: bool = False, compile: bool = False):
        if not isinstance(cfg, AugmentConfig):
            raise TypeError(f"Augmenter needs an AugmentConfig, got {type(cfg).__name__}")
        if compile and not sync_free:
            raise ValueError("Augmenter(compile=True) needs sync_free=True: the host-synchronising "
                             "jitter has data-dependent shapes")
        self.cfg = cfg
        self.sync_free = sync_free
        self._group = torch.compile(self._group_views, dynamic=False) if compile else self._group_views
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def specs(self) -> list[tuple[int, tuple[float, float], float, float]]:
        """(size, crop scale, blur probability, solarise probability) of each view, in order."""
        cfg = self.cfg
        specs = [
            (cfg.image_size, cfg.global_scale, cfg.blur_p[0], cfg.solarize_p[0]),
            (cfg.image_size, cfg.global_scale, cfg.blur_p[1], cfg.solarize_p[1]),
        ]
        specs += [(cfg.resolved_local_size, cfg.local_scale, cfg.blur_p[2], 0.0)] * cfg.local_crops
        if cfg.style == "affine":
            specs = [(size, scale, cfg.affine_blur_p, 0.0) for size, scale, _, _ in specs]
        return specs

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 normalize: bool = True) -> list[torch.Tensor]:
        """Views [global1, global2, *locals]; ``normalize=False`` keeps [0, 1] pixel units."""
        _check_images(images, self.cfg)
        x = images.to(torch.float32).div_(255.0)
        specs = self.specs()
        gdev = generator.device if generator is not None else x.device
        # one table of uniforms per view, drawn in view order: both paths see the same numbers
        us = [torch.rand(x.shape[0], _N_COLS, generator=generator, device=gdev).to(x.device) for _ in specs]
        if self.sync_free:
            return self._static_views(x, us, specs, normalize)
        views = []
        for u, (size, scale, blur_p, sol_p) in zip(us, specs):
            v = self._view(x, u, size, scale, blur_p, sol_p)
            views.append(self._normalize(v) if normalize else v)
        return views

    def _normalize(self, v: torch.Tensor) -> torch.Tensor:
        # cached per device: building them per call is a host-to-device copy (a sync on CUDA)
        if v.device not in self._stats:
            mean = torch.tensor(self.cfg.mean, device=v.device).view(1, -1, 1, 1)
            inv_std = 1.0 / torch.tensor(self.cfg.std, device=v.device).view(1, -1, 1, 1)
            self._stats[v.device] = (mean, inv_std)
        return _normalize_(v, *self._stats[v.device])

    def _static_views(self, x: torch.Tensor, us: list[torch.Tensor], specs: list,
                      normalize: bool) -> list[torch.Tensor]:
        """Views of one (size, scale) as one batch, view-major; then split back into views."""
        groups: dict[tuple, list[int]] = {}
        for i, (size, scale, _, _) in enumerate(specs):
            groups.setdefault((size, tuple(scale)), []).append(i)
        views: list[torch.Tensor] = [None] * len(specs)  # type: ignore[list-item]
        n = x.shape[0]
        for (size, scale), members in groups.items():
            u = torch.cat([us[i] for i in members])
            blur_p = [specs[i][2] for i in members]
            sol_p = [specs[i][3] for i in members]
            out = self._group(x, u, size, scale, blur_p, sol_p)
            if normalize:
                out = self._normalize(out)
            for j, i in enumerate(members):
                views[i] = out[j * n:(j + 1) * n]
        return views

    def _group_views(self, x: torch.Tensor, u: torch.Tensor, size: int, scale: tuple[float, float],
                     blur_p: list[float], sol_p: list[float]) -> torch.Tensor:
        """k views of one size for all N images, as one [k * N] batch (rows of u: view-major)."""
        k, n = len(blur_p), x.shape[0]
        xs = x if k == 1 else x.repeat(k, 1, 1, 1)
        out = self._geometry(xs, u, size, scale)
        out = self._colour(out, u, static=True)

        def per_view_mask(col: int, probs: list[float]) -> torch.Tensor | None:
            if max(probs) <= 0:
                return None
            return torch.cat([u[j * n:(j + 1) * n, col] < p for j, p in enumerate(probs)])

        return self._blur_solarize(out, u, size, per_view_mask(_C_BLUR, blur_p), per_view_mask(_C_SOL, sol_p))

    def _view(self, x: torch.Tensor, u: torch.Tensor, size: int, scale: tuple[float, float],
              blur_p: float, sol_p: float) -> torch.Tensor:
        out = self._geometry(x, u, size, scale)
        out = self._colour(out, u, static=False)
        blur = u[:, _C_BLUR] < blur_p if blur_p > 0 else None
        sol = u[:, _C_SOL] < sol_p if sol_p > 0 else None
        return self._blur_solarize(out, u, size, blur, sol)

    def _geometry(self, x: torch.Tensor, u: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
        cfg = self.cfg
        height, width = x.shape[-2:]
        if cfg.style == "byol":
            boxes = sample_crop_boxes(u[:, _C_SCALE], u[:, _C_RATIO], u[:, _C_POS],
                                      height, width, scale, cfg.ratio)
            theta = crop_flip_theta(boxes, u[:, _C_FLIP] < cfg.flip_p, height, width)
            return warp(x, theta, size, padding_mode="border")
        a = u[:, _C_AFF]
        theta = affine_theta(
            angle=torch.deg2rad(_uniform(a[:, 0], -cfg.affine_degrees, cfg.affine_degrees)),
            scale=_uniform(a[:, 1], *cfg.affine_scale),
            shear=torch.deg2rad(_uniform(a[:, 2], -cfg.affine_shear, cfg.affine_shear)),
            translate=2 * cfg.affine_translate * (2 * a[:, 3:5] - 1),
        )
        return warp(x, theta, size, padding_mode="zeros")

    def _colour(self, out: torch.Tensor, u: torch.Tensor, static: bool) -> torch.Tensor:
        cfg = self.cfg
        factors = jitter_factors(u[:, _C_FACT], cfg)
        colour = cfg.channels == 3 and cfg.style == "byol"
        n_ops = 4 if colour else 2  # saturation/hue mean nothing without colour
        ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue][:n_ops]
        jitter = _jitter_static if static else _jitter
        out = jitter(out, u[:, _C_JIT] < cfg.jitter_p, factors, u[:, _C_ORDER][:, :n_ops], ops)
        if colour and cfg.grayscale_p > 0:
            gray = u[:, _C_GRAY] < cfg.grayscale_p
            out = torch.where(gray.view(-1, 1, 1, 1), to_grayscale(out), out)
        return out

    def _blur_solarize(self, out: torch.Tensor, u: torch.Tensor, size: int, blur: torch.Tensor | None,
                       sol: torch.Tensor | None) -> torch.Tensor:
        """Blur where ``blur``, solarise where ``sol`` (per-sample masks; None: nobody)."""
        cfg = self.cfg
        if blur is not None:
            lo, hi = cfg.blur_sigma if cfg.style == "byol" else cfg.affine_blur_sigma
            kernels = gaussian_kernels(_uniform(u[:, _C_SIGMA], lo, hi), blur_kernel_size(size))
            identity = torch.zeros_like(kernels)
            identity[:, kernels.shape[1] // 2] = 1.0
            # kernel weights sum to 1 only up to rounding; keep pixels inside [0, 1]
            out = gaussian_blur(out, torch.where(blur.view(-1, 1), kernels, identity)).clamp_(0, 1)
        if sol is not None:
            out = torch.where(sol.view(-1, 1, 1, 1) & (out >= cfg.solarize_threshold), 1.0 - out, out)
        return out


def _check_images(images: torch.Tensor, cfg: AugmentConfig) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 [N, C, H, W] pixels, got dtype {images.dtype}; "
                        "pass the data set's uint8 tensors, not normalised floats")
    if images.dim() != 4 or images.shape[1] != cfg.channels:
        raise ValueError(f"images must have shape [N, {cfg.channels}, H, W] for this config, "
                         f"got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch; pass at least one image")


def eval_transform(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Deterministic evaluation input: uint8 -> [0, 1], bilinear resize to image_size, normalise."""
    _check_images(images, cfg)
    x = images.to(torch.float32).div_(255.0)
    if x.shape[-2:] != (cfg.image_size, cfg.image_size):
        x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                          align_corners=False, antialias=False)
    mean = torch.tensor(cfg.mean, device=x.device).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.tensor(cfg.std, device=x.device).view(1, -1, 1, 1)
    return _normalize_(x, mean, inv_std)
