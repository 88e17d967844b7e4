"""Tests for sclib.core.augment: shapes, determinism, probabilities, and agreement with torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from sclib.core.augment import (
    AugmentConfig,
    Augmenter,
    _jitter,
    _jitter_static,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    affine_grid,
    affine_theta,
    blur_kernel_size,
    crop_flip_theta,
    default_local_size,
    eval_transform,
    gaussian_blur,
    gaussian_kernels,
    jitter_factors,
    sample_crop_boxes,
    warp,
)

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def rgb_cfg(**kw) -> AugmentConfig:
    base = dict(image_size=32, channels=3, mean=MEAN3, std=STD3)
    base.update(kw)
    return AugmentConfig(**base)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_images(n: int, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=gen(seed), dtype=torch.uint8)


def assert_fraction(hits: torch.Tensor, p: float, what: str) -> None:
    """Binomial check: observed rate within 5 standard deviations of p (exact when p is 0 or 1)."""
    n = hits.numel()
    rate = hits.float().mean().item()
    tol = 5 * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(rate - p) <= tol, f"{what}: rate {rate:.4f}, expected {p} +- {tol:.4f} (n={n})"


# ----------------------------------------------------------------------------- shapes and API


def test_shapes_dtypes_device_and_local_size():
    cfg = rgb_cfg(local_crops=3)
    views = Augmenter(cfg)(noise_images(5), gen())
    assert len(views) == 5
    local = default_local_size(32)
    for i, v in enumerate(views):
        size = 32 if i < 2 else local
        assert v.shape == (5, 3, size, size) and v.dtype == torch.float32 and v.device.type == "cpu"
        assert torch.isfinite(v).all()
    custom = Augmenter(rgb_cfg(local_crops=1, local_size=10))(noise_images(2), gen())
    assert custom[2].shape == (2, 3, 10, 10)


def test_default_local_size_follows_dino_ratio_even_and_at_least_8():
    for size in (8, 28, 32, 64, 96, 224):
        s = default_local_size(size)
        assert s % 2 == 0 and s >= 8
        assert abs(s - size * 96 / 224) <= 1 or s == 8
    assert default_local_size(224) == 96


def test_blur_kernel_is_odd_and_about_ten_percent():
    for size in (14, 28, 32, 96, 224):
        k = blur_kernel_size(size)
        assert k % 2 == 1 and k >= 3 and (k == 3 or abs(k - 0.1 * size) <= 1.5)
    assert blur_kernel_size(224) == 23  # BYOL's kernel at 224


def test_pixel_space_range_and_normalisation_consistency():
    cfg = rgb_cfg(local_crops=2)
    aug = Augmenter(cfg)
    x = noise_images(64)
    raw = aug(x, gen(3), normalize=False)
    norm = aug(x, gen(3))
    mean = torch.tensor(MEAN3).view(1, 3, 1, 1)
    std = torch.tensor(STD3).view(1, 3, 1, 1)
    for r, n in zip(raw, norm):
        assert r.min() >= 0 and r.max() <= 1
        torch.testing.assert_close(n, (r - mean) / std, atol=1e-5, rtol=1e-5)


def test_bad_inputs_give_clear_errors():
    aug = Augmenter(rgb_cfg())
    with pytest.raises(TypeError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        AugmentConfig(image_size=32, channels=2, mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="mean and std"):
        AugmentConfig(image_size=32, channels=3, mean=(0.5,), std=(0.2,))
    with pytest.raises(ValueError, match="style"):
        rgb_cfg(style="simclr")
    with pytest.raises(ValueError, match="global_scale"):
        rgb_cfg(global_scale=(0.0, 1.0))
    with pytest.raises(TypeError, match="uint8"):
        eval_transform(torch.rand(2, 3, 8, 8), rgb_cfg())


# ----------------------------------------------------------------------------- randomness


def test_identical_images_get_different_views():
    x = noise_images(1).repeat(2, 1, 1, 1)
    for v in Augmenter(rgb_cfg(local_crops=1))(x, gen()):
        assert (v[0] - v[1]).abs().max() > 0.05


def test_fixed_seed_reproduces_and_other_seed_differs():
    aug = Augmenter(rgb_cfg(local_crops=2))
    x = noise_images(16)
    a, b, c = aug(x, gen(7)), aug(x, gen(7)), aug(x, gen(8))
    for va, vb, vc in zip(a, b, c):
        assert torch.equal(va, vb)
        assert not torch.allclose(va, vc)
    torch.manual_seed(11)
    d = aug(x)
    torch.manual_seed(11)
    e = aug(x)
    assert all(torch.equal(u, v) for u, v in zip(d, e))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("static", [False, True], ids=["default", "sync-free"])
def test_cpu_cuda_parity_with_same_cpu_generator(static):
    x = noise_images(64)
    cpu = Augmenter(rgb_cfg(local_crops=2))(x, gen(5))
    gpu = Augmenter(rgb_cfg(local_crops=2), sync_free=static)(x.cuda(), gen(5))
    for c, g in zip(cpu, gpu):
        assert g.device.type == "cuda"
        per_sample = (c - g.cpu()).abs().flatten(1).amax(1)
        # a rounding-edge case (crop size, solarise threshold) may flip on another device
        assert (per_sample > 1e-3).float().mean() <= 0.05


# ----------------------------------------------------------------------------- probabilities


def test_grayscale_probability():
    n = 3000
    x = noise_images(n, size=8)
    views = Augmenter(rgb_cfg(image_size=8))(x, gen(1), normalize=False)
    for v in views:
        gray = (v[:, 0] == v[:, 1]).flatten(1).all(1) & (v[:, 1] == v[:, 2]).flatten(1).all(1)
        assert_fraction(gray, 0.2, "grayscale")


def test_flip_probability_with_full_crop():
    n = 3000
    ramp = torch.linspace(0, 255, 8).round().to(torch.uint8).expand(n, 3, 8, 8).contiguous()
    cfg = rgb_cfg(image_size=8, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), solarize_p=(0.0, 0.0))
    for v in Augmenter(cfg)(ramp, gen(2), normalize=False):
        left, right = v[..., :4].mean(dim=(1, 2, 3)), v[..., 4:].mean(dim=(1, 2, 3))
        assert_fraction(left > right, 0.5, "flip")


def test_solarise_probability_per_view():
    n = 4000
    x = torch.full((n, 3, 8, 8), 200, dtype=torch.uint8)
    cfg = rgb_cfg(image_size=8, jitter_p=0.0)
    v1, v2 = Augmenter(cfg)(x, gen(3), normalize=False)
    assert_fraction(v1.mean(dim=(1, 2, 3)) < 0.5, 0.0, "solarise view 1")
    assert_fraction(v2.mean(dim=(1, 2, 3)) < 0.5, 0.2, "solarise view 2")


def test_jitter_probability():
    n = 2000
    x = noise_images(n, size=8)
    cfg = rgb_cfg(image_size=8, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0,
                  grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=(0.0, 0.0))
    ref = x.float() / 255
    for v in Augmenter(cfg)(x, gen(4), normalize=False):
        changed = (v - ref).abs().flatten(1).amax(1) > 1e-3
        assert_fraction(changed, 0.8, "colour jitter")


def test_blur_probability_per_view():
    n = 3000
    x = noise_images(n, size=16)
    cfg = rgb_cfg(image_size=16, local_crops=1, local_size=16, global_scale=(1.0, 1.0),
                  local_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                  grayscale_p=0.0, solarize_p=(0.0, 0.0), blur_sigma=(1.0, 2.0))
    ref = x.float() / 255
    for v, p in zip(Augmenter(cfg)(x, gen(5), normalize=False), (1.0, 0.1, 0.5)):
        blurred = (v - ref).abs().flatten(1).amax(1) > 1e-3
        assert_fraction(blurred, p, f"blur p={p}")


# ----------------------------------------------------------------------------- crop sampler


def reference_crop(us, ur, up, height, width, scale, ratio):
    """Torchvision's RandomResizedCrop.get_params written as a plain loop over given uniforms."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for t in range(len(us)):
        target = area * (scale[0] + (scale[1] - scale[0]) * us[t])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * ur[t])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return (int(up[0] * (height - h + 1)), int(up[1] * (width - w + 1)), h, w)
    return None


def test_crop_sampler_matches_loop_reference_and_stays_in_bounds():
    n, height, width, scale, ratio = 3000, 64, 48, (0.14, 1.0), (3 / 4, 4 / 3)
    g = gen(6)
    us, ur, up = torch.rand(n, 10, generator=g), torch.rand(n, 10, generator=g), torch.rand(n, 2, generator=g)
    boxes = sample_crop_boxes(us, ur, up, height, width, scale, ratio)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    for i in range(0, n, 7):
        ref = reference_crop(us[i].double().tolist(), ur[i].double().tolist(), up[i].double().tolist(),
                             height, width, scale, ratio)
        if ref is not None:
            assert tuple(int(b) for b in boxes[i].tolist()) == ref, f"row {i}"


def test_crop_area_spans_the_scale_range():
    n, size = 20000, 200
    for scale in ((0.14, 1.0), (0.05, 0.4)):
        g = gen(7)
        boxes = sample_crop_boxes(torch.rand(n, 10, generator=g), torch.rand(n, 10, generator=g),
                                  torch.rand(n, 2, generator=g), size, size, scale, (3 / 4, 4 / 3))
        frac = boxes[:, 2] * boxes[:, 3] / size**2
        aspect = boxes[:, 3] / boxes[:, 2]
        assert frac.min() >= scale[0] - 0.01 and frac.max() <= scale[1] + 0.01
        assert aspect.min() >= 3 / 4 - 0.02 and aspect.max() <= 4 / 3 + 0.02
        width = scale[1] - scale[0]
        assert frac.min() < scale[0] + 0.02 * width and frac.max() > scale[1] - 0.05 * width
        # every tenth of the range gets crops: the areas are spread, not clumped
        hist = torch.histc(frac, bins=10, min=scale[0], max=scale[1])
        assert (hist > n / 100).all(), hist


def test_views_crop_areas_within_their_scale_ranges():
    # identity-coloured input: red encodes the column, green the row, so each output's colour
    # range reveals the crop box it was sampled from
    n, size = 600, 128
    coord = (2 * torch.arange(size) + 1).to(torch.uint8)
    x = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    x[:, 0] = coord.view(1, size)
    x[:, 1] = coord.view(size, 1)
    cfg = rgb_cfg(image_size=32, local_crops=1, local_size=16, global_scale=(0.4, 1.0),
                  jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=(0.0, 0.0))
    views = Augmenter(cfg)(x, gen(19), normalize=False)
    for v, (lo, hi) in zip(views, (cfg.global_scale, cfg.global_scale, cfg.local_scale)):
        out = v.shape[-1]
        pix = (v[:, :2] * 255 - 1) / 2  # back to source pixel coordinates
        extent = (pix.amax(dim=(2, 3)) - pix.amin(dim=(2, 3))) * out / (out - 1)
        frac = extent[:, 0] * extent[:, 1] / size**2
        assert frac.min() > lo - 0.02 and frac.max() < hi + 0.02
        assert frac.min() < lo + 0.1 * (hi - lo) and frac.max() > hi - 0.15 * (hi - lo)


def test_crop_fallback_matches_torchvision_centre_crop():
    height, width, scale, ratio = 10, 100, (0.9, 1.0), (3 / 4, 4 / 3)
    g = gen(8)
    boxes = sample_crop_boxes(torch.rand(4, 10, generator=g), torch.rand(4, 10, generator=g),
                              torch.rand(4, 2, generator=g), height, width, scale, ratio)
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, height, width), list(scale), list(ratio))
    for b in boxes.tolist():
        assert tuple(int(v) for v in b) == tuple(expected)


# ----------------------------------------------------------------------------- geometry vs torchvision


@pytest.mark.parametrize("box,out", [((5, 7, 20, 24), 32), ((3, 2, 30, 28), 14), ((0, 0, 8, 8), 32)])
def test_crop_resize_matches_torchvision_resized_crop(box, out):
    img = noise_images(1, size=40, seed=9).float() / 255
    img = TF.gaussian_blur(img, [5, 5], [1.5, 1.5])  # natural images are smooth; noise exaggerates edges
    boxes = torch.tensor([box], dtype=torch.float32)
    for flip in (False, True):
        theta = crop_flip_theta(boxes, torch.tensor([flip]), 40, 40)
        ours = warp(img, theta, out)
        ref = TF.resized_crop(img, *box, [out, out], antialias=False)
        if flip:
            ref = TF.hflip(ref)
        diff = (ours - ref).abs()
        assert diff.mean() < 0.02
        # away from the crop border (where torchvision clamps to the crop and grid_sample reads
        # the neighbouring pixels) both sample the same points: agreement to rounding
        assert diff[..., 2:-2, 2:-2].max() < 1e-4


def test_affine_grid_equals_torch_affine_grid():
    theta = torch.randn(6, 2, 3, generator=gen(20))
    for size in (5, 14, 32):
        ref = F.affine_grid(theta, [6, 1, size, size], align_corners=False)
        torch.testing.assert_close(affine_grid(theta, size), ref, atol=1e-6, rtol=1e-5)


def test_affine_theta_moves_points_by_the_forward_transform():
    size = 65
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    norm = lambda p: (2 * p + 1) / size - 1  # noqa: E731 (pixel centre -> normalised)
    cx, cy = 40, 20
    blob = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2)).view(1, 1, size, size)
    angle, scale, shear = torch.tensor([0.3]), torch.tensor([1.1]), torch.tensor([0.1])
    translate = torch.tensor([[0.1, -0.15]])
    out = warp(blob, affine_theta(angle, scale, shear, translate), size, padding_mode="zeros")[0, 0]
    mass = out.sum()
    got = torch.stack([(out * norm(xs)).sum() / mass, (out * norm(ys)).sum() / mass])
    p = torch.tensor([norm(cx), norm(cy)], dtype=torch.float32)
    c, s, t = math.cos(0.3), math.sin(0.3), math.tan(0.1)
    rot = torch.tensor([[c, -s], [s, c]]) @ torch.tensor([[1.0, t], [0.0, 1.0]])
    expected = 1.1 * rot @ p + translate[0]
    assert (got - expected).abs().max() < 0.02


def test_affine_style_keeps_digit_side_and_works_on_tiny_grayscale():
    n = 2000
    digit = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    digit[:, :, 1:7, 1:3] = 255  # a bar on the left: a flip would move it right
    cfg = AugmentConfig(image_size=32, channels=1, mean=(0.3,), std=(0.3,), style="affine")
    views = Augmenter(cfg)(digit, gen(10), normalize=False)
    for v in views:
        assert v.shape == (n, 1, 32, 32) and v.min() >= 0 and v.max() <= 1
        left, right = v[..., :16].sum(dim=(1, 2, 3)), v[..., 16:].sum(dim=(1, 2, 3))
        assert (left > 2 * right).all()
        assert v.sum(dim=(1, 2, 3)).min() > 0  # the digit never leaves the frame
    assert (views[0] - views[1]).abs().flatten(1).amax(1).min() > 0.01  # independent views
    byol = AugmentConfig(image_size=32, channels=1, mean=(0.3,), std=(0.3,), global_scale=(1.0, 1.0))
    flipped = [(v[..., 16:].sum((1, 2, 3)) > v[..., :16].sum((1, 2, 3))) for v in
               Augmenter(byol)(digit, gen(10), normalize=False)]
    assert_fraction(flipped[0], 0.5, "byol flips the bar, affine must not")


def test_grayscale_byol_path_uses_brightness_and_contrast():
    n = 1000
    x = noise_images(n, c=1, size=16)
    cfg = AugmentConfig(image_size=16, channels=1, mean=(0.5,), std=(0.2,), global_scale=(1.0, 1.0),
                        ratio=(1.0, 1.0), flip_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=(0.0, 0.0))
    views = Augmenter(cfg)(x, gen(11), normalize=False)
    ref = x.float() / 255
    for v in views:
        assert v.shape == (n, 1, 16, 16) and v.min() >= 0 and v.max() <= 1
        assert_fraction((v - ref).abs().flatten(1).amax(1) > 1e-3, 0.8, "grayscale jitter")


# ----------------------------------------------------------------------------- colour vs torchvision


def colour_images() -> torch.Tensor:
    x = noise_images(4, size=12, seed=12).float() / 255
    x[0] = x[0].mean(dim=0, keepdim=True)  # a gray image: hue ties and zero chroma
    x[1, :, :4] = 1.0  # saturated white stripe
    x[1, 0, 4:8] = 1.0  # equal-max ties
    x[1, 1, 4:8] = 1.0
    return x


@pytest.mark.parametrize("ours,theirs,factors", [
    (adjust_brightness, TF.adjust_brightness, (0.6, 1.0, 1.4, 1.2)),
    (adjust_contrast, TF.adjust_contrast, (0.6, 1.0, 1.4, 0.8)),
    (adjust_saturation, TF.adjust_saturation, (0.8, 1.0, 1.2, 0.0)),
    (adjust_hue, TF.adjust_hue, (-0.1, 0.0, 0.1, 0.45)),
])
def test_colour_ops_match_torchvision(ours, theirs, factors):
    x = colour_images()
    got = ours(x.clone(), torch.tensor(factors))
    ref = torch.stack([theirs(x[i], f) for i, f in enumerate(factors)])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)


def test_contrast_and_brightness_on_single_channel_match_torchvision():
    x = noise_images(3, c=1, size=10, seed=13).float() / 255
    f = (0.6, 1.3, 0.9)
    torch.testing.assert_close(adjust_contrast(x.clone(), torch.tensor(f)),
                               torch.stack([TF.adjust_contrast(x[i], f[i]) for i in range(3)]),
                               atol=2e-5, rtol=0)
    torch.testing.assert_close(adjust_brightness(x.clone(), torch.tensor(f)),
                               torch.stack([TF.adjust_brightness(x[i], f[i]) for i in range(3)]),
                               atol=2e-5, rtol=0)


JITTER_OPS = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]


def jitter_inputs(n: int, seed: int):
    """Images in [0, 1] and per-sample jitter draws in the BYOL ranges: apply (p 0.8), the four
    factors (brightness, contrast, saturation, hue) and the uniforms that set each sample's order."""
    x = noise_images(n, size=8, seed=seed).float() / 255
    g = gen(seed + 1)
    apply = torch.rand(n, generator=g) < 0.8
    factors = torch.stack([0.6 + 0.8 * torch.rand(n, generator=g), 0.6 + 0.8 * torch.rand(n, generator=g),
                           0.8 + 0.4 * torch.rand(n, generator=g), 0.2 * torch.rand(n, generator=g) - 0.1], 1)
    return x, apply, factors, torch.rand(n, 4, generator=g)


def test_random_order_jitter_matches_per_image_torchvision_loop():
    n = 40
    x, apply, factors, order_u = jitter_inputs(n, seed=14)
    got = _jitter(x.clone(), apply, factors, order_u, JITTER_OPS)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    orders = set()
    for i in range(n):
        img = x[i]
        if apply[i]:
            order = order_u[i].argsort().tolist()
            orders.add(tuple(order))
            for op in order:
                img = fns[op](img, factors[i, op].item())
        torch.testing.assert_close(got[i], img, atol=3e-5, rtol=0)
    assert len(orders) > 5  # the order really varies between samples


def test_jitter_factor_ranges_follow_color_jitter():
    cfg = rgb_cfg()
    f = jitter_factors(torch.rand(20000, 4, generator=gen(18)), cfg)
    bounds = [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]
    for j, (lo, hi) in enumerate(bounds):
        assert f[:, j].min() >= lo and f[:, j].max() <= hi
        assert f[:, j].min() < lo + 0.01 * (hi - lo) and f[:, j].max() > hi - 0.01 * (hi - lo)
        assert abs(f[:, j].mean().item() - (lo + hi) / 2) < 0.01 * (hi - lo)
    corr = torch.corrcoef(f.T) - torch.eye(4)
    assert corr.abs().max() < 0.05  # each factor drawn independently


def test_gaussian_blur_matches_torchvision_per_sample_sigma():
    x = noise_images(3, size=20, seed=16).float() / 255
    sigmas = torch.tensor([0.3, 1.0, 2.0])
    for k in (3, 5):
        got = gaussian_blur(x, gaussian_kernels(sigmas, k))
        ref = torch.stack([TF.gaussian_blur(x[i], [k, k], [s, s]) for i, s in enumerate(sigmas.tolist())])
        torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)


# ----------------------------------------------------------------------------- eval


def test_eval_transform_resizes_normalises_deterministically():
    x = noise_images(4, size=8, seed=17)
    cfg = rgb_cfg(image_size=32)
    a, b = eval_transform(x, cfg), eval_transform(x, cfg)
    assert torch.equal(a, b) and a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    mean = torch.tensor(MEAN3).view(1, 3, 1, 1)
    std = torch.tensor(STD3).view(1, 3, 1, 1)
    ref = (TF.resize(x.float() / 255, [32, 32], antialias=False) - mean) / std
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)
    same = eval_transform(noise_images(2, size=32), cfg)
    torch.testing.assert_close(same, (noise_images(2, size=32).float() / 255 - mean) / std)


# ----------------------------------------------------------------------------- static shapes (GPU path)


@pytest.mark.parametrize("cfg", [
    rgb_cfg(local_crops=2, local_size=16),
    AugmentConfig(image_size=28, channels=1, mean=(0.13,), std=(0.31,), style="affine", local_crops=1),
    AugmentConfig(image_size=14, channels=1, mean=(0.29,), std=(0.35,)),
], ids=["byol rgb + 2 local", "affine gray + 1 local", "byol gray"])
def test_the_sync_free_path_makes_the_same_views_from_the_same_numbers(cfg):
    x = noise_images(97, c=cfg.channels, size=32 if cfg.channels == 3 else 28, seed=21)
    default = Augmenter(cfg)(x, gen(4))
    static = Augmenter(cfg, sync_free=True)(x, gen(4))
    assert [v.shape for v in static] == [v.shape for v in default]
    for i, (d, s) in enumerate(zip(default, static)):
        assert torch.equal(d, s), f"view {i} differs by up to {(d - s).abs().max():.3g}"
    assert not torch.equal(static[0], static[1])  # the two global views come from their own numbers


def test_static_jitter_runs_each_samples_ops_in_its_own_order():
    n = 64
    x, apply, factors, order_u = jitter_inputs(n, seed=16)
    ops = JITTER_OPS
    sorted_way = _jitter(x.clone(), apply, factors, order_u, ops)
    static_way = _jitter_static(x.clone(), apply, factors, order_u, ops)
    torch.testing.assert_close(static_way, sorted_way, rtol=0, atol=1e-6)
    # a fixed order instead of each sample's own would not match
    fixed = _jitter_static(x.clone(), apply, factors, torch.arange(4.0).expand(n, 4), ops)
    assert (fixed - sorted_way).abs().amax(dim=(1, 2, 3)).gt(1e-3).sum() > n // 4


def test_compiling_the_augmentation_needs_the_sync_free_path():
    with pytest.raises(ValueError, match="sync_free"):
        Augmenter(rgb_cfg(), compile=True)
