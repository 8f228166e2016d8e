"""Building blocks of the corruptions in `pie.shift.corruptions`.

Every function here works on a batch of float32 images shaped (N, H, W, C) with
values in [0, 1]. Operators that depend only on the image shape and the severity
(zoom and pixelate resampling, blur kernels, frost textures) are built once and
cached, then applied to the whole batch at once.
"""
import functools
import importlib.util
import os

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


def gaussian_blur(x, sigma):
    """Gaussian blur over the two image axes with skimage.filters.gaussian's defaults
    (edge pixels repeated, kernel radius int(4 sigma + 0.5), as scipy's), through
    OpenCV: the same normalised taps, several times faster than scipy here."""
    if sigma <= 0:
        return x
    radius = int(4.0 * sigma + 0.5)
    size = (2 * radius + 1, 2 * radius + 1)
    out = np.empty(x.shape, np.float32)
    for n in range(len(x)):
        # cv2 drops a trailing channel axis of 1; reshape puts it back.
        out[n] = cv2.GaussianBlur(np.asarray(x[n], np.float32), size, sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REPLICATE).reshape(x.shape[1:])
    return out


@functools.lru_cache(maxsize=64)
def disk_kernel(radius, alias_sigma):
    """Normalised disk of `radius` px anti-aliased as the published generators do.

    ImageNet-C's `disk()`: the disk lies on a grid of half-width 8 (radius <= 8) or
    `radius`, is normalised, then blurred by cv2.GaussianBlur with a 3x3 (radius <= 8)
    or 5x5 window and cv2's default reflect-101 border. At radius 8 and 10 the disk
    touches the grid's edge, so that border reflects disk values back in; the kernel
    is not normalised again afterwards (its sum can differ from 1 by a few 1e-3).
    """
    if radius <= 8:
        offsets, window = np.arange(-8, 8 + 1), 3
    else:
        offsets, window = np.arange(-radius, radius + 1), 5
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    disk = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(window, window), sigmaX=alias_sigma)
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


# --------------------------------------------------------------------------- glass walk


def glass_walk_positions(h, w, max_delta):
    """Flat indices of the pixels the glass-blur walk visits, in visiting order:
    rows h - d down to d + 1, and in each row columns w - d down to d + 1."""
    rows = np.arange(h - max_delta, max_delta, -1)
    cols = np.arange(w - max_delta, max_delta, -1)
    return (rows[:, None] * w + cols[None, :]).ravel()


def glass_walk_offsets(w, max_delta):
    """Flat-index step of each of the (2 d)**2 equally likely offsets (dx, dy) in
    [-d, d)**2 of the walk, code = (dy + d) * 2 d + (dx + d)."""
    steps = np.arange(-max_delta, max_delta)
    return (steps[:, None] * w + steps[None, :]).ravel()


@functools.lru_cache(maxsize=16)
def _glass_walk_tables(h, w, max_delta):
    """(visited positions, offset steps, visiting rank of every pixel (-1 = never
    visited), ranks 0..P-1) of the walk on an h x w image, read-only."""
    positions = glass_walk_positions(h, w, max_delta)
    order = np.full(h * w, -1, np.int64)
    order[positions] = np.arange(positions.size)
    tables = (positions, glass_walk_offsets(w, max_delta), order, np.arange(positions.size))
    for table in tables:
        table.flags.writeable = False
    return tables


def glass_walk_sources(h, w, max_delta, codes):
    """Where each pixel's value comes from after one pass of the published walk.

    The published walk visits pixel p (in glass_walk_positions order) and runs
    `x[p], x[q] = x[q], x[p]` on numpy rows with q = p + (dy, dx): the right side
    holds views, so x[p] takes x[q]'s value and x[q] is rewritten with that same
    value. Each visit therefore copies q over p. If q was visited earlier in the
    pass, x[q] already holds its own source's value, so the value p ends up with is
    found by following earlier-visited pixels until one whose source was not
    rewritten yet. That chain is followed for all pixels at once by pointer
    jumping (about log2 of the longest chain rounds), not a loop over pixels.

    codes: (P,) integers in [0, (2 d)**2), the offset of each visited position (see
    glass_walk_offsets). Returns (h*w,) flat indices: out[p] = x[sources[p]] is the
    pass. One image at a time: its arrays stay in cache, which is faster than
    a batch.
    """
    positions, steps, order, visit = _glass_walk_tables(h, w, max_delta)
    partners = positions + steps[codes]
    rank = order[partners]
    # k links to its partner's rank when that partner was visited before k.
    linked = (rank >= 0) & (rank < visit)
    follow = np.where(linked, rank, visit)
    # Jump only where the chain goes on: k whose target still links further.
    chase = np.flatnonzero(linked)
    while chase.size:
        follow[chase] = follow[follow[chase]]
        chase = chase[linked[follow[chase]]]
    sources = np.arange(h * w)
    sources[positions] = partners[follow]
    return sources


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
    flat = x.reshape(n * h * w, c)
    base = (np.arange(n) * (h * w)).reshape(n, 1, 1)

    def gather(r, q):
        return flat[(base + r * w + q).ravel()].reshape(n, h, w, c)

    top = gather(r0, c0) * (1 - fc) + gather(r0, c1) * fc
    bottom = gather(r1, c0) * (1 - fc) + gather(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def clipped_zoom_matrix(size, zoom):
    """(size, size) matrix of the published `clipped_zoom` along one axis.

    The published generators crop the central ceil(size / zoom) pixels (from
    (size - crop) // 2), enlarge them with scipy.ndimage.zoom(order=1) to
    round(crop * zoom) pixels (whose end pixels land on the crop's end pixels) and
    trim that back to `size` from its centre. Whole-pixel crop and trim offsets make
    the zoom centre drift by up to a pixel: at 32 px that shift is a large part of
    the CIFAR-10-C zoom blur, so it is reproduced rather than idealised.
    """
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    enlarged = int(round(crop * zoom))
    trim = (enlarged - size) // 2
    step = (crop - 1) / (enlarged - 1) if enlarged > 1 else 0.0
    coords = top + (np.arange(size) + trim) * step
    low = np.clip(np.floor(coords).astype(np.int64), 0, size - 1)
    high = np.minimum(low + 1, size - 1)
    frac = coords - low
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.arange(size), low), 1 - frac)
    np.add.at(matrix, (np.arange(size), high), frac)
    return matrix


def _clipped_zoom_2d(h, w, zoom):
    """Sparse (h*w, h*w) matrix of the published clipped_zoom on an image."""
    return sparse.kron(sparse.csr_matrix(clipped_zoom_matrix(h, zoom)),
                       sparse.csr_matrix(clipped_zoom_matrix(w, zoom)), format="csr")


@functools.lru_cache(maxsize=64)
def centre_zoom_operator(h, w, zoom):
    """The published clipped_zoom by `zoom` as a sparse (h*w, h*w) operator."""
    return _clipped_zoom_2d(h, w, zoom).astype(np.float32)


def zoom_factors(end, step):
    """np.arange(1, end, step), exactly as the published lists were made: its
    floating-point end point keeps 1.11 in arange(1, 1.11, 0.01) and 1.06 in
    arange(1, 1.06, 0.01)."""
    return np.arange(1.0, end, step)


@functools.lru_cache(maxsize=16)
def zoom_blur_operator(h, w, end, step):
    """Average of the image and its clipped zooms by every factor (factor 1
    included, so the unzoomed image counts twice, as in the published definition)."""
    factors = zoom_factors(end, step)
    total = sparse.identity(h * w, format="csr")
    for factor in factors:
        total = total + _clipped_zoom_2d(h, w, factor)
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


def _calibrated(texture):
    """A procedural texture whose value distribution, per channel, is mapped onto
    the frost photographs' (FROST_PHOTO_QUANTILES): each value's rank within its
    channel becomes the photographs' value at that rank, so brightness and contrast
    match theirs while the texture keeps its own structure."""
    out = np.empty_like(texture)
    levels = np.linspace(0, 1, FROST_PHOTO_QUANTILES.shape[1])
    for channel in range(texture.shape[-1]):
        values = texture[..., channel]
        ranks = np.empty(values.size)
        ranks[np.argsort(values, axis=None, kind="stable")] = np.linspace(0, 1, values.size)
        out[..., channel] = np.interp(ranks, levels, FROST_PHOTO_QUANTILES[channel]).reshape(
            values.shape)
    return out.astype(np.float32)


@functools.lru_cache(maxsize=4)
def frost_textures(zoom):
    """The fixed bank of periodic procedural frost textures, (K, T, T, 3) in [0, 1],
    calibrated to the photographs' brightness and contrast and resized by `zoom`
    (1 for the ImageNet table, 0.2 for CIFAR). Used when the photographs are not
    installed."""
    bank = []
    for index in range(FROST_TEXTURE_COUNT):
        texture = _calibrated(_frost_texture(index))
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


# The published generators blend in crops of frost photographs, drawn among the
# first five files of their list (np.random.randint(5): the sixth is never used).
# The imagecorruptions package ships the same files; they are read from the
# installed package, never copied into this repository.
FROST_PHOTO_PACKAGE = "imagecorruptions"
FROST_PHOTO_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
# Mean, standard deviation and the 0, 1/16, ..., 16/16 quantiles per RGB channel
# of those five photographs (each photograph weighted equally, as each is drawn
# equally often), measured once from the files; the procedural fallback is mapped
# onto these quantiles.
FROST_PHOTO_MEAN = np.array([0.5720, 0.6557, 0.7017], np.float32)
FROST_PHOTO_STD = np.array([0.2239, 0.1691, 0.1638], np.float32)
FROST_PHOTO_QUANTILES = np.array([
    [0.0549, 0.2196, 0.2745, 0.3294, 0.3804, 0.4353, 0.4824, 0.5333, 0.5843, 0.6392,
     0.698, 0.7451, 0.7804, 0.8078, 0.8353, 0.8706, 1.0],
    [0.0941, 0.3765, 0.4627, 0.5137, 0.5451, 0.5686, 0.5961, 0.6235, 0.651, 0.6863,
     0.7294, 0.7686, 0.8, 0.8314, 0.8588, 0.8902, 1.0],
    [0.1216, 0.4235, 0.5137, 0.5647, 0.6, 0.6275, 0.651, 0.6745, 0.702, 0.7333,
     0.7686, 0.8078, 0.8392, 0.8706, 0.898, 0.9294, 1.0]])


def frost_photo_dir():
    """The installed package's folder of frost photographs, or None when the package
    (or any of the files) is absent. Found without importing the package."""
    try:
        spec = importlib.util.find_spec(FROST_PHOTO_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "frost")
    if not all(os.path.isfile(os.path.join(folder, name)) for name in FROST_PHOTO_FILES):
        return None
    return folder


@functools.lru_cache(maxsize=8)
def frost_photographs(zoom, min_h, min_w):
    """The frost photographs as RGB float32 in [0, 1], resized by `zoom` (bilinear,
    as the CIFAR generator does for 0.2), each then enlarged when needed so that it
    is at least (min_h + 1, min_w + 1): a random crop of that size always fits.
    None when the photographs are not installed."""
    folder = frost_photo_dir()
    if folder is None:
        return None
    photos = []
    for name in FROST_PHOTO_FILES:
        photo = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if photo is None:
            return None
        photo = photo[..., ::-1].astype(np.float32) / 255  # BGR -> RGB
        if zoom != 1.0:
            photo = cv2.resize(photo, (0, 0), fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        height, width = photo.shape[:2]
        if height <= min_h or width <= min_w:
            # Too small for the image (large images or the CIFAR shrink): enlarge
            # 10% beyond the fit, as the imagecorruptions package does.
            factor = 1.1 * max((min_h + 1) / height, (min_w + 1) / width)
            photo = cv2.resize(photo, (int(np.ceil(width * factor)), int(np.ceil(height * factor))),
                               interpolation=cv2.INTER_CUBIC)
        photo = np.clip(photo, 0, 1)
        photo.flags.writeable = False
        photos.append(photo)
    return tuple(photos)


def frost_source():
    """'photographs' when the published frost photographs are installed, else
    'procedural'."""
    return "photographs" if frost_photo_dir() is not None else "procedural"
