"""Building blocks of the corruptions in `pie.shift.corruptions`.

Every function here works on a batch of float32 images shaped (N, H, W, C) with
values in [0, 1]. Operators that depend only on the image shape and the severity
(zoom and pixelate resampling, blur kernels, frost textures) are built once and
cached, then applied to the whole batch at once.
"""
import functools

import cv2
import numpy as np
from scipy import ndimage, sparse

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL "L"

# --------------------------------------------------------------------------- colour


def gray_to_rgb(x):
    return np.repeat(x, 3, axis=-1)


def rgb_to_gray(x):
    return (x @ LUMA_WEIGHTS)[..., None].astype(np.float32)


def add_hsv_value(x, amount):
    """HSV V -> clip(V + amount) with hue and saturation kept.

    For a fixed hue and saturation every RGB channel is proportional to V = max
    channel, so rescaling the pixel by V'/V is the exact HSV round trip. Black
    pixels (V = 0, no hue) become gray V'.
    """
    value = x.max(axis=-1, keepdims=True)
    new_value = np.minimum(value + amount, 1.0)
    ratio = np.divide(new_value, value, out=np.zeros_like(value), where=value > 0)
    return np.where(value > 0, x * ratio, new_value)


def scale_hsv_saturation(x, factor, offset):
    """HSV S -> clip(S * factor + offset) with hue and value kept.

    With V = max and m = min channel, S = (V - m) / V and each channel sits at
    V - S * V * g(hue); scaling S therefore scales every channel's distance below
    V by S'/S. Gray pixels have hue 0 (red), as in skimage's rgb2hsv.
    """
    value = x.max(axis=-1, keepdims=True)
    spread = value - x.min(axis=-1, keepdims=True)
    sat = np.divide(spread, value, out=np.zeros_like(value), where=value > 0)
    new_sat = np.clip(sat * factor + offset, 0.0, 1.0)
    ratio = np.divide(new_sat, sat, out=np.zeros_like(sat), where=sat > 0)
    coloured = value - ratio * (value - x)
    red = np.concatenate([value, value * (1 - new_sat), value * (1 - new_sat)], axis=-1)
    return np.where(sat > 0, coloured, red)


# --------------------------------------------------------------------------- linear filters


def gaussian_blur(x, sigma, mode="nearest", truncate=4.0):
    """Gaussian blur over the two image axes (skimage.filters.gaussian's defaults)."""
    if sigma <= 0:
        return x
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=truncate)


@functools.lru_cache(maxsize=64)
def disk_kernel(radius, alias_sigma):
    """Normalised disk of `radius` px, softened by a Gaussian of `alias_sigma` px."""
    margin = max(int(np.ceil(3 * alias_sigma)), 1)
    half = int(np.ceil(radius)) + margin
    offsets = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    disk = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64)
    disk = ndimage.gaussian_filter(disk / disk.sum(), alias_sigma, mode="constant", truncate=3.0)
    kernel = (disk / disk.sum()).astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def correlate(x, kernel):
    """2-D correlation of every image with `kernel`, mirrored border (reflect-101)."""
    out = np.empty_like(x)
    for n in range(len(x)):
        # cv2 drops a trailing channel axis of 1; reshape puts it back.
        out[n] = cv2.filter2D(x[n], -1, kernel, borderType=cv2.BORDER_REFLECT_101).reshape(x.shape[1:])
    return out


@functools.lru_cache(maxsize=64)
def gaussian_matrix(size, sigma, truncate):
    """(size, size) matrix of scipy's gaussian_filter1d(mode="reflect") on a line of
    `size` samples: the kernel's taps that fall outside are folded back in."""
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    source = np.mod(np.arange(size)[:, None] + taps[None, :], 2 * size)
    source = np.where(source >= size, 2 * size - 1 - source, source)  # half-sample mirror
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.repeat(np.arange(size), taps.size), source.ravel()), np.tile(weights, size))
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def separable_apply(x, rows, cols):
    """out[n, :, :, c] = rows @ x[n, :, :, c] @ cols.T for every image and channel."""
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return np.ascontiguousarray((rows @ planes @ cols.T).transpose(0, 2, 3, 1))


def motion_kernel(radius, sigma, angle_degrees):
    """One-sided motion-blur kernel and its anchor, for cv2.filter2D.

    Tap i (0 .. 2*radius) weighs exp(-i^2 / (2 sigma^2)) and reads the pixel i
    steps along the angle, rounded to the pixel grid: the streak ImageMagick's
    MotionBlurImage draws. Taps below 1e-4 of the first are dropped (they are
    far below one grey level) to keep the kernel small.
    """
    taps = np.arange(int(2 * radius + 1))
    weights = np.exp(-taps ** 2 / (2.0 * sigma ** 2))
    keep = weights >= 1e-4
    taps, weights = taps[keep], weights[keep] / weights[keep].sum()
    angle = np.deg2rad(angle_degrees)
    dx = np.ceil(taps * np.cos(angle) - 0.5).astype(int)
    dy = np.ceil(taps * np.sin(angle) - 0.5).astype(int)
    kernel = np.zeros((dy.max() - dy.min() + 1, dx.max() - dx.min() + 1), np.float32)
    np.add.at(kernel, (dy - dy.min(), dx - dx.min()), weights.astype(np.float32))
    return kernel, (int(-dx.min()), int(-dy.min()))


def motion_blur(x, radius, sigma, angles):
    """Blurs image n along angles[n] (degrees); edge pixels are repeated."""
    out = np.empty_like(x)
    for n, angle in enumerate(angles):
        kernel, anchor = motion_kernel(radius, sigma, angle)
        # cv2 drops a trailing channel axis of 1; reshape puts it back.
        out[n] = cv2.filter2D(x[n], -1, kernel, anchor=anchor,
                              borderType=cv2.BORDER_REPLICATE).reshape(x.shape[1:])
    return out


# --------------------------------------------------------------------------- resampling


def _reflect101(coords, size):
    """Continuous coordinates folded into [0, size - 1] by mirroring at the end pixels."""
    if size == 1:
        return np.zeros_like(coords)
    period = 2.0 * (size - 1)
    folded = np.mod(np.abs(coords), period)
    return np.where(folded > size - 1, period - folded, folded)


def bilinear_sample(x, rows, cols):
    """out[n, i, j] = x[n] at (rows[n, i, j], cols[n, i, j]), bilinear, mirrored border."""
    n, h, w, c = x.shape
    rows = _reflect101(rows, h)
    cols = _reflect101(cols, w)
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    fr = (rows - r0).astype(np.float32)[..., None]
    fc = (cols - c0).astype(np.float32)[..., None]
    flat = x.reshape(n, h * w, c)

    def gather(r, q):
        return np.take_along_axis(flat, (r * w + q).reshape(n, h * w, 1), axis=1).reshape(n, h, w, c)

    top = gather(r0, c0) * (1 - fc) + gather(r0, c1) * fc
    bottom = gather(r1, c0) * (1 - fc) + gather(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def _bilinear_matrix(h, w, rows, cols):
    """Sparse (h*w, h*w) matrix sampling an image at (rows, cols), edge pixels repeated."""
    rows = np.clip(rows, 0, h - 1).ravel()
    cols = np.clip(cols, 0, w - 1).ravel()
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    fr, fc = rows - r0, cols - c0
    out_index = np.tile(np.arange(h * w), 4)
    in_index = np.concatenate([r0 * w + c0, r0 * w + c1, r1 * w + c0, r1 * w + c1])
    weights = np.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    return sparse.csr_matrix((weights, (out_index, in_index)), shape=(h * w, h * w))


def _centre_zoom_matrix(h, w, zoom):
    """Sampling matrix of a zoom by `zoom` into the image centre (the central 1/zoom
    of the image stretched to the full frame)."""
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return _bilinear_matrix(h, w, (ii - ci) / zoom + ci, (jj - cj) / zoom + cj)


@functools.lru_cache(maxsize=64)
def centre_zoom_operator(h, w, zoom):
    return _centre_zoom_matrix(h, w, zoom).astype(np.float32)


def zoom_factors(end, step):
    """np.arange(1, end, step), exactly as the published lists were made: its
    floating-point end point keeps 1.11 in arange(1, 1.11, 0.01) and 1.06 in
    arange(1, 1.06, 0.01)."""
    return np.arange(1.0, end, step)


@functools.lru_cache(maxsize=64)
def zoom_blur_operator(h, w, end, step):
    """Average of the image and its centre zooms by every factor (factor 1 included,
    so the unzoomed image counts twice, as in the published definition)."""
    factors = zoom_factors(end, step)
    total = sparse.identity(h * w, format="csr")
    for factor in factors:
        total = total + _centre_zoom_matrix(h, w, factor)
    return (total / (len(factors) + 1)).astype(np.float32).tocsr()


def apply_spatial(matrix, x):
    """Applies a (H*W, H*W) spatial operator to every image and channel of x."""
    n, h, w, c = x.shape
    columns = x.transpose(1, 2, 0, 3).reshape(h * w, n * c)
    out = matrix @ columns
    return np.ascontiguousarray(out.reshape(h, w, n, c).transpose(2, 0, 1, 3), dtype=np.float32)


@functools.lru_cache(maxsize=64)
def pixelate_matrix(size, factor):
    """(size, size) matrix of PIL's BOX resize down to int(size * factor) px and back.

    Down: every source pixel goes, with equal weight, to the coarse pixel whose
    footprint holds its centre. Up: every pixel takes the coarse pixel holding its
    centre.
    """
    coarse = max(int(size * factor), 1)
    pixel = np.arange(size)
    owner = np.minimum(((pixel + 0.5) * coarse / size).astype(int), coarse - 1)
    down = np.zeros((coarse, size))
    down[owner, pixel] = 1.0
    down /= down.sum(axis=1, keepdims=True)
    up = np.zeros((size, coarse))
    up[pixel, owner] = 1.0
    matrix = (up @ down).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


# --------------------------------------------------------------------------- plasma


def plasma_fractal(uniforms, decay):
    """Diamond-square height maps, one per image, normalised to [0, 1].

    uniforms: (N, S, S) draws in [-1, 1], S a power of two; each cell's draw is
    used once, at the level where the cell is filled. The map wraps around. The
    random term of a level is amplitude**2 with amplitude 100, 100/decay, ...
    (as in the published generator), so roughness falls by decay**2 per octave.
    """
    n, size, _ = uniforms.shape
    field = np.zeros((n, size, size), np.float64)
    step, amplitude = size, 100.0
    while step >= 2:
        half = step // 2
        noise = amplitude ** 2
        corners = field[:, 0::step, 0::step]
        square_sum = corners + np.roll(corners, -1, axis=1)
        square_sum = square_sum + np.roll(square_sum, -1, axis=2)
        field[:, half::step, half::step] = square_sum / 4 + noise * uniforms[:, half::step, half::step]
        centres = field[:, half::step, half::step]
        # Mid-points of the horizontal edges: two corners and the centres above and below.
        edge_sum = corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)
        field[:, 0::step, half::step] = edge_sum / 4 + noise * uniforms[:, 0::step, half::step]
        # Mid-points of the vertical edges: two corners and the centres left and right.
        edge_sum = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)
        field[:, half::step, 0::step] = edge_sum / 4 + noise * uniforms[:, half::step, 0::step]
        step, amplitude = half, amplitude / decay
    low = field.min(axis=(1, 2), keepdims=True)
    high = field.max(axis=(1, 2), keepdims=True)
    return ((field - low) / np.maximum(high - low, 1e-12)).astype(np.float32)


def next_power_of_two(value):
    return 1 << int(np.ceil(np.log2(max(value, 1))))


# --------------------------------------------------------------------------- frost

FROST_TEXTURE_COUNT = 5
FROST_TEXTURE_SIZE = 640  # periodic; 0.2 x 640 = 128 keeps the CIFAR copy periodic
_FROST_TEXTURE_SEED = 20190328  # fixed: the textures are an asset, not per-image noise
_FROST_TINT = np.array([0.80, 0.90, 1.00], np.float32)  # bluish white ice


def _periodic_noise(rng, size, exponent):
    """Periodic noise with a 1/f**exponent power spectrum, scaled to [0, 1]."""
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / radius ** (exponent / 2)
    spectrum[0, 0] = 0
    field = np.fft.ifft2(spectrum).real
    return (field - field.min()) / (field.max() - field.min())


def _draw_dendrites(rng, size):
    """Ice crystals: from random nuclei, six-fold branches with side twigs at +-60
    degrees, drawn on a 3x3 tiling and folded back so the texture wraps around."""
    canvas = np.zeros((3 * size, 3 * size), np.float32)
    nuclei = rng.integers(60, 100)
    for _ in range(nuclei):
        cx, cy = rng.uniform(size, 2 * size, 2)
        base = rng.uniform(0, np.pi / 3)
        reach = rng.uniform(25, 110)
        brightness = rng.uniform(0.35, 1.0)
        for arm in range(6):
            angle = base + arm * np.pi / 3 + rng.normal(0, 0.08)
            length = reach * rng.uniform(0.5, 1.0)
            end = (cx + length * np.cos(angle), cy + length * np.sin(angle))
            _line(canvas, (cx, cy), end, brightness)
            for along in np.arange(rng.uniform(4, 8), length, rng.uniform(4, 9)):
                twig = (length - along) * rng.uniform(0.25, 0.55)
                start = (cx + along * np.cos(angle), cy + along * np.sin(angle))
                for side in (-1, 1):
                    if rng.random() < 0.8:
                        twig_angle = angle + side * np.pi / 3
                        twig_end = (start[0] + twig * np.cos(twig_angle),
                                    start[1] + twig * np.sin(twig_angle))
                        _line(canvas, start, twig_end, brightness * rng.uniform(0.5, 0.9))
    return canvas.reshape(3, size, 3, size).sum(axis=(0, 2))


def _line(canvas, start, end, value):
    cv2.line(canvas, (int(round(start[0])), int(round(start[1]))),
             (int(round(end[0])), int(round(end[1]))), float(value), 1, cv2.LINE_8)


def _frost_texture(index):
    rng = np.random.default_rng(np.random.SeedSequence([_FROST_TEXTURE_SEED, index]))
    size = FROST_TEXTURE_SIZE
    haze = _periodic_noise(rng, size, exponent=2.2)
    crystals = np.minimum(_draw_dendrites(rng, size), 1.0)
    crystals = ndimage.gaussian_filter(crystals, 0.7, mode="wrap")
    sparkle = (_periodic_noise(rng, size, exponent=0.5) > 0.72).astype(np.float32)
    sparkle = ndimage.gaussian_filter(sparkle, 0.6, mode="wrap")
    # Crystals grow where the haze is dense; the haze itself is a faint milky layer.
    density = 0.4 + 0.6 * haze
    intensity = 0.15 + 0.35 * haze + 1.6 * crystals * density + 0.25 * sparkle * density
    return np.clip(intensity, 0, 1).astype(np.float32)[..., None] * _FROST_TINT


@functools.lru_cache(maxsize=4)
def frost_textures(zoom):
    """The fixed bank of periodic frost textures, (K, T, T, 3) in [0, 1], resized by
    `zoom` (1 for the ImageNet table, 0.2 for CIFAR)."""
    bank = []
    for index in range(FROST_TEXTURE_COUNT):
        texture = _frost_texture(index)
        if zoom != 1.0:
            side = int(round(FROST_TEXTURE_SIZE * zoom))
            texture = cv2.resize(texture, (side, side), interpolation=cv2.INTER_AREA)
        bank.append(texture)
    bank = np.stack(bank).astype(np.float32)
    bank.flags.writeable = False
    return bank


def frost_crops(bank, texture_index, top, left, h, w):
    """Crop n is bank[texture_index[n]] from (top[n], left[n]), wrapping around."""
    side = bank.shape[1]
    rows = (top[:, None] + np.arange(h)[None, :]) % side
    cols = (left[:, None] + np.arange(w)[None, :]) % side
    return bank[texture_index[:, None, None], rows[:, :, None], cols[:, None, :]]
