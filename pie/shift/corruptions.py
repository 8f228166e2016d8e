"""ImageNet-C style image corruptions, 19 kinds x 5 severities, reproducible.

    corrupt(image, "fog", 3, image_id=17, seed=0)         # one image
    corrupt_batch(images, image_ids, "fog", 3, seed=0)    # a stack of images
    CORRUPTIONS["fog"](image, 3, image_id=17)             # the registry

Images are (H, W), (H, W, 1) or (H, W, 3), uint8 in [0, 255] or float in [0, 1];
the result has the input's shape and dtype. Every random draw of a corruption
comes from `corruption_rng(name, severity, image_id, seed)`, so an image's
corrupted version depends only on (seed, image_id, corruption, severity): not on
the batch it was processed in, nor on the order of the calls. Parameters come
from the ImageNet-C (224 px) or CIFAR-10-C (32 px) table (pie.shift.tables),
picked by `scale`. Each follows the published generators (make_imagenet_c.py,
make_cifar_c.py), frost with their photographs when the imagecorruptions package
is installed; tests/test_corruption_oracle.py checks every corruption and severity
against that package. docs/corruptions.md describes each corruption.
"""
import io
import numbers

import cv2
import numpy as np
from PIL import Image

from pie.shift import ops as ops
from pie.shift.tables import (
    AUTO, AUTO_CIFAR_BELOW, CIFAR, ELASTIC_SIZE_FACTOR, FROST_TEXTURE_ZOOM, IMAGENET,
    PARAMETER_TABLES, SCALES,
)

NOISE_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise")
BLUR_CORRUPTIONS = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
WEATHER_CORRUPTIONS = ("snow", "frost", "fog", "brightness")
DIGITAL_CORRUPTIONS = ("contrast", "elastic_transform", "pixelate", "jpeg_compression")
# The 15 benchmark corruptions then the 4 held-out ("validation") ones; a
# corruption's position in ALL_CORRUPTIONS is its index in the published code and
# part of its random seed.
BENCHMARK_CORRUPTIONS = NOISE_CORRUPTIONS + BLUR_CORRUPTIONS + WEATHER_CORRUPTIONS + DIGITAL_CORRUPTIONS
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_GROUPS = {
    "noise": NOISE_CORRUPTIONS,
    "blur": BLUR_CORRUPTIONS,
    "weather": WEATHER_CORRUPTIONS,
    "digital": DIGITAL_CORRUPTIONS,
    "extra": EXTRA_CORRUPTIONS,
}
SEVERITIES = (1, 2, 3, 4, 5)
# Corruptions that leave a single-channel (grey) image unchanged at every
# severity: saturate scales HSV saturation, and a grey pixel has none (the
# published generators return the red channel of the re-coloured grey image,
# which is its value, unchanged). The corruption stage skips them on grey data
# and they do not count in `mean_corruption`.
IDENTITY_ON_GRAY = ("saturate",)
MIN_IMAGE_SIDE = 8

_WATER_RGB = np.array([175, 238, 238], np.float32) / 255  # pale turquoise
_MUD_RGB = np.array([63, 42, 20], np.float32) / 255  # brown
# Emboss kernel that lights the water drops from the top left.
_WATER_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)


# --------------------------------------------------------------------------- corruptions
# Each takes x (N, H, W, C) float32 in [0, 1], the severity's parameters `c`, one
# generator per image (None for deterministic corruptions) and the resolved scale,
# and returns the corrupted batch, unclipped.


def _per_image(rngs, draw):
    return np.stack([draw(rng) for rng in rngs])


def _gaussian_noise(x, c, rngs, scale):
    shape = x.shape[1:]
    return x + c * _per_image(rngs, lambda rng: rng.standard_normal(shape, np.float32))


def _shot_noise(x, c, rngs, scale):
    counts = np.stack([rng.poisson(image * c) for rng, image in zip(rngs, x)])
    return (counts / c).astype(np.float32)


def _impulse_noise(x, c, rngs, scale):
    shape = x.shape[1:]
    draw = _per_image(rngs, lambda rng: rng.random(shape, np.float32))
    # Each value is hit with probability c, half of the hits become 1, half 0.
    return np.where(draw < c / 2, 1.0, np.where(draw < c, 0.0, x)).astype(np.float32)


def _speckle_noise(x, c, rngs, scale):
    shape = x.shape[1:]
    return x + x * c * _per_image(rngs, lambda rng: rng.standard_normal(shape, np.float32))


def _defocus_blur(x, c, rngs, scale):
    radius, alias_sigma = c
    return ops.correlate(x, ops.disk_kernel(radius, alias_sigma))


def _glass_blur(x, c, rngs, scale):
    sigma, max_delta, passes = c
    x = ops.gaussian_blur(x, sigma)
    n, h, w, channels = x.shape
    count = ops.glass_walk_positions(h, w, max_delta).size
    out = np.empty_like(x)
    for k, rng in enumerate(rngs):
        # Per pass and visited pixel one of the (2 max_delta)**2 offsets (dx, dy)
        # in [-max_delta, max_delta)**2, equally likely.
        codes = rng.integers(0, (2 * max_delta) ** 2, size=(passes, count), dtype=np.uint8)
        # The passes compose into one gather of pixel positions.
        sources = ops.glass_walk_sources(h, w, max_delta, codes[0])
        for step in range(1, passes):
            sources = sources[ops.glass_walk_sources(h, w, max_delta, codes[step])]
        out[k] = x[k].reshape(h * w, channels)[sources].reshape(h, w, channels)
    return ops.gaussian_blur(out, sigma)


def _motion_blur(x, c, rngs, scale):
    radius, sigma = c
    angles = [rng.uniform(-45, 45) for rng in rngs]
    return ops.motion_blur(x, radius, sigma, angles)


def _zoom_blur(x, c, rngs, scale):
    end, step = c
    return ops.apply_spatial(ops.zoom_blur_operator(x.shape[1], x.shape[2], end, step), x)


def _snow(x, c, rngs, scale):
    mean, spread, zoom, threshold, radius, sigma, keep = c
    n, h, w, channels = x.shape
    flakes = _per_image(rngs, lambda rng: rng.normal(mean, spread, (h, w, 1)).astype(np.float32))
    if zoom != 1:
        flakes = ops.apply_spatial(ops.centre_zoom_operator(h, w, zoom), flakes)
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    # Flakes fall: streaks point between straight down-left and down-right.
    flakes = ops.motion_blur(flakes, radius, sigma, [rng.uniform(-135, -45) for rng in rngs])
    gray = x if channels == 1 else ops.rgb_to_gray(x)
    # Whiten the scene (snow light), then add the flakes and their 180-degree turn.
    x = keep * x + (1 - keep) * np.maximum(x, gray * 1.5 + 0.5)
    return x + flakes + flakes[:, ::-1, ::-1]


def _frost(x, c, rngs, scale):
    image_weight, frost_weight = c
    n, h, w, _ = x.shape
    photos = ops.frost_photographs(FROST_TEXTURE_ZOOM[scale], h, w)
    if photos is not None:
        # A random photograph, cropped at a random corner (exclusive upper bound,
        # as the published np.random.randint).
        crops = np.empty(x.shape[:3] + (3,), np.float32)
        for k, rng in enumerate(rngs):
            photo = photos[rng.integers(len(photos))]
            top = rng.integers(0, photo.shape[0] - h)
            left = rng.integers(0, photo.shape[1] - w)
            crops[k] = photo[top:top + h, left:left + w]
    else:
        bank = ops.frost_textures(FROST_TEXTURE_ZOOM[scale])
        draws = _per_image(rngs, lambda rng: np.array([
            rng.integers(bank.shape[0]), rng.integers(bank.shape[1]), rng.integers(bank.shape[2])]))
        crops = ops.frost_crops(bank, draws[:, 0], draws[:, 1], draws[:, 2], h, w)
    return image_weight * x + frost_weight * crops


def _fog(x, c, rngs, scale):
    strength, decay = c
    n, h, w, _ = x.shape
    side = ops.next_power_of_two(max(h, w))
    # A few maps at a time (about 2**17 cells): they stay in cache, a whole batch
    # of 256 x 256 maps would not, and small maps are still done many at once.
    group = max(1, 2 ** 17 // side ** 2)
    haze = np.concatenate([
        ops.plasma_fractal(np.stack([rng.uniform(-1, 1, (side, side))
                                     for rng in rngs[start:start + group]]), decay)
        for start in range(0, n, group)])[:, :h, :w, None]
    # Rescale so the brightest clean value keeps its level under the added haze.
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * haze) * peak / (peak + strength)


def _brightness(x, c, rngs, scale):
    return ops.add_hsv_value(x, c)


def _contrast(x, c, rngs, scale):
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def _elastic_transform(x, c, rngs, scale):
    n, h, w, _ = x.shape
    size = min(h, w) * ELASTIC_SIZE_FACTOR[scale]
    alpha, sigma, jitter = (value * size for value in c)
    draws = [(rng.uniform(-jitter, jitter, (3, 2)), rng.uniform(-1, 1, (h, w, 2))) for rng in rngs]
    # Random affine map: three points around the centre, each moved by up to
    # `jitter` px. Solve for the map from moved points back to the originals.
    centre = np.array([w // 2, h // 2], np.float64)
    half = min(h, w) // 3
    anchors = centre + np.array([[half, half], [half, -half], [-half, -half]], np.float64)
    moved = anchors + np.stack([jit for jit, _ in draws])
    moved_h = np.concatenate([moved, np.ones((n, 3, 1))], axis=2)
    inverse = np.linalg.solve(moved_h, np.broadcast_to(anchors, (n, 3, 2)))  # (n, 3, 2)
    # Smooth random displacement field, alpha px times a Gaussian-smoothed U(-1, 1).
    noise = np.stack([field for _, field in draws]).astype(np.float32)
    if sigma > 0:
        # = ndimage.gaussian_filter(noise, (0, sigma, sigma, 0), mode="reflect",
        # truncate=3), as two matrix products: much faster for the wide kernels.
        noise = ops.separable_apply(noise, ops.gaussian_matrix(h, sigma, 3.0),
                                    ops.gaussian_matrix(w, sigma, 3.0))
    displacement = alpha * noise
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    qx = cols[None] + displacement[..., 0]
    qy = rows[None] + displacement[..., 1]
    # One resampling of the composed map: output p reads the clean image at
    # affine^-1(p + displacement(p)).
    points = np.stack([qx, qy, np.ones_like(qx)], axis=-1)  # (n, h, w, 3)
    source = np.einsum("nhwk,nkd->nhwd", points, inverse)  # (x, y) per pixel
    return ops.bilinear_sample(x, source[..., 1], source[..., 0])


def _pixelate(x, c, rngs, scale):
    return ops.separable_apply(x, ops.pixelate_matrix(x.shape[1], c), ops.pixelate_matrix(x.shape[2], c))


def _jpeg_compression(x, c, rngs, scale):
    n, h, w, channels = x.shape
    pixels = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    out = np.empty_like(pixels)
    for k in range(n):
        buffer = io.BytesIO()
        Image.fromarray(pixels[k, :, :, 0] if channels == 1 else pixels[k]).save(
            buffer, format="JPEG", quality=int(c))
        buffer.seek(0)
        out[k] = np.asarray(Image.open(buffer)).reshape(h, w, channels)
    return out.astype(np.float32) / 255


def _gaussian_blur(x, c, rngs, scale):
    return ops.gaussian_blur(x, c)


def _water_shading(liquid):
    """Shading of one water layer (H, W): bright rims just inside the drop edges,
    from the distance to the edges, equalised and embossed."""
    level = (liquid * 255).astype(np.uint8)
    edge_distance = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
    edge_distance = cv2.blur(np.minimum(edge_distance, 20), (3, 3)).astype(np.uint8)
    relief = cv2.filter2D(cv2.equalizeHist(edge_distance), cv2.CV_8U, _WATER_EMBOSS)
    return cv2.blur(relief, (3, 3)).astype(np.float32)


def _spatter(x, c, rngs, scale):
    mean, spread, smooth, threshold, strength, is_mud = c
    n, h, w, _ = x.shape
    liquid = _per_image(rngs, lambda rng: rng.normal(mean, spread, (h, w, 1)).astype(np.float32))
    liquid = ops.gaussian_blur(liquid, smooth)
    liquid = np.where(liquid < threshold, 0, liquid)
    if is_mud:
        # Opaque brown blobs: smoothed liquid mask, kept where it is nearly solid.
        mask = ops.gaussian_blur((liquid > threshold).astype(np.float32), strength)
        mask = np.where(mask < 0.8, 0, mask)
        return x * (1 - mask) + mask * _MUD_RGB
    water = liquid * np.stack([_water_shading(layer[..., 0]) for layer in liquid])[..., None]
    peak = water.max(axis=(1, 2, 3), keepdims=True)
    water = strength * np.divide(water, peak, out=np.zeros_like(water), where=peak > 0)
    return x + water * _WATER_RGB


def _saturate(x, c, rngs, scale):
    factor, offset = c
    return ops.scale_hsv_saturation(x, factor, offset)


# name -> (implementation, draws random numbers, needs colour channels)
_IMPLEMENTATIONS = {
    "gaussian_noise": (_gaussian_noise, True, False),
    "shot_noise": (_shot_noise, True, False),
    "impulse_noise": (_impulse_noise, True, False),
    "defocus_blur": (_defocus_blur, False, False),
    "glass_blur": (_glass_blur, True, False),
    "motion_blur": (_motion_blur, True, False),
    "zoom_blur": (_zoom_blur, False, False),
    # snow, fog and brightness act on a gray image exactly as on its RGB copy
    # (gray of gray is itself, HSV value of gray is the gray level), so they run
    # on the single channel; frost, spatter and saturate add colour and go
    # through RGB.
    "snow": (_snow, True, False),
    "frost": (_frost, True, True),
    "fog": (_fog, True, False),
    "brightness": (_brightness, False, False),
    "contrast": (_contrast, False, False),
    "elastic_transform": (_elastic_transform, True, False),
    "pixelate": (_pixelate, False, False),
    "jpeg_compression": (_jpeg_compression, False, False),
    "speckle_noise": (_speckle_noise, True, False),
    "gaussian_blur": (_gaussian_blur, False, False),
    "spatter": (_spatter, True, True),
    "saturate": (_saturate, False, True),
}
assert tuple(_IMPLEMENTATIONS) == ALL_CORRUPTIONS
RANDOM_CORRUPTIONS = tuple(name for name in ALL_CORRUPTIONS if _IMPLEMENTATIONS[name][1])

# --------------------------------------------------------------------------- validation


def _check_name(name):
    if not isinstance(name, str) or name not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(ALL_CORRUPTIONS)}")


def _check_severity(severity):
    if (isinstance(severity, bool) or not isinstance(severity, numbers.Integral)
            or not 1 <= severity <= 5):
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}"
                         if isinstance(severity, str) else
                         f"severity must be an integer in 1..5, got {severity}")


def _check_scale(scale):
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")


def _check_count(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")


def _check_pixels(array, what):
    """Checks the type, dtype and value range of an image or a stack of images."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} dtype must be uint8 or float, got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and array.size:
        if not np.isfinite(array).all():
            raise ValueError(f"float {what} values must be finite")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(f"float {what} values must lie in [0, 1], got [{low:.4g}, {high:.4g}]")


def _check_image(image):
    shapes = "(H, W), (H, W, 1) or (H, W, 3)"
    if isinstance(image, np.ndarray) and not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must have shape {shapes}, got {image.shape}")
    _check_pixels(image, "image")
    _check_side(image.shape[0], image.shape[1])


def _check_images(images):
    shapes = "(N, H, W), (N, H, W, 1) or (N, H, W, 3)"
    if isinstance(images, np.ndarray) and not (
            images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3))):
        raise ValueError(f"images must have shape {shapes}, got {images.shape}")
    _check_pixels(images, "images")
    _check_side(images.shape[1], images.shape[2])


def _check_side(h, w):
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ValueError(f"images must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, got {h}x{w}")


def _check_image_ids(image_ids, count):
    ids = np.asarray(image_ids)
    if ids.shape != (count,):
        raise ValueError(f"image_ids must hold one id per image ({count}), got shape {ids.shape}")
    if count and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0):
        raise ValueError(f"image_ids must be non-negative integers, got dtype {ids.dtype}"
                         f" with minimum {ids.min()}")
    return ids.astype(np.int64)


# --------------------------------------------------------------------------- API


def changes_channels(name, channels):
    """False for a corruption that is the identity on images with this many
    channels (saturate on grey images), True otherwise."""
    _check_name(name)
    return not (channels == 1 and name in IDENTITY_ON_GRAY)


def resolve_scale(scale, height, width):
    """The parameter table `scale` stands for on an image of this size:
    'auto' -> 'cifar' when the short side is below AUTO_CIFAR_BELOW px, else 'imagenet'."""
    _check_scale(scale)
    if scale != AUTO:
        return scale
    return CIFAR if min(height, width) < AUTO_CIFAR_BELOW else IMAGENET


def corruption_params(name, severity, scale):
    """The parameters of `name` at `severity` in the 'imagenet' or 'cifar' table."""
    _check_name(name)
    _check_severity(severity)
    if scale not in PARAMETER_TABLES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(PARAMETER_TABLES)}")
    return PARAMETER_TABLES[scale][name][severity - 1]


def corruption_rng(name, severity, image_id=0, seed=0):
    """The generator every random draw of (name, severity) on image `image_id` comes
    from: np.random.default_rng(SeedSequence([seed, image_id, index of name, severity]))."""
    _check_name(name)
    _check_severity(severity)
    _check_count(image_id, "image_id")
    _check_count(seed, "seed")
    return _rng(name, severity, int(image_id), int(seed))


def _rng(name, severity, image_id, seed):
    entropy = [seed, image_id, ALL_CORRUPTIONS.index(name), int(severity)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def corrupt(image, name, severity, *, image_id=0, seed=0, scale=AUTO):
    """Corrupts one image (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1].

    Returns an array of the same shape and dtype. The result is a function of
    (image, name, severity, image_id, seed, scale) only.
    """
    _check_name(name)
    _check_severity(severity)
    _check_scale(scale)
    _check_count(image_id, "image_id")
    _check_count(seed, "seed")
    _check_image(image)
    return _corrupt(image[None], np.array([image_id], np.int64), name, severity, int(seed), scale)[0]


def corrupt_batch(images, image_ids, name, severity, seed=0, scale=AUTO):
    """Corrupts a stack (N, H, W), (N, H, W, 1) or (N, H, W, 3) of images.

    image_ids: N non-negative integers. Image k comes out exactly as
    corrupt(images[k], name, severity, image_id=image_ids[k], seed=seed, scale=scale).
    """
    _check_name(name)
    _check_severity(severity)
    _check_scale(scale)
    _check_count(seed, "seed")
    _check_images(images)
    ids = _check_image_ids(image_ids, images.shape[0])
    return _corrupt(images, ids, name, severity, int(seed), scale)


def _corrupt(images, image_ids, name, severity, seed, scale):
    """The checked core: images (N, H, W[, C])."""
    if images.shape[0] == 0:
        return images.copy()
    function, is_random, needs_colour = _IMPLEMENTATIONS[name]
    table = resolve_scale(scale, images.shape[1], images.shape[2])
    params = PARAMETER_TABLES[table][name][severity - 1]
    if images.ndim == 3 or images.shape[3] == 1:
        if name in IDENTITY_ON_GRAY:
            return images.copy()
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255
    if x.ndim == 3:
        x = x[..., None]
    rngs = [_rng(name, severity, int(i), seed) for i in image_ids] if is_random else None
    gray_via_rgb = needs_colour and x.shape[3] == 1
    y = function(ops.gray_to_rgb(x) if gray_via_rgb else x, params, rngs, table)
    # In place where the corruption returned a fresh float32 array (most do).
    fresh = y.dtype == np.float32 and y.flags.writeable and y.base is None and y is not x
    y = np.clip(y, 0, 1, out=y if fresh else None)
    if gray_via_rgb:
        y = ops.rgb_to_gray(y)
    if images.dtype == np.uint8:
        y *= 255
        np.rint(y, out=y)
    return y.reshape(images.shape).astype(images.dtype)


def _registered(name):
    def corruption(image, severity, *, image_id=0, seed=0, scale=AUTO):
        return corrupt(image, name, severity, image_id=image_id, seed=seed, scale=scale)

    corruption.__name__ = corruption.__qualname__ = name
    corruption.__doc__ = (f"corrupt(image, {name!r}, severity, image_id=..., seed=..., scale=...)")
    return corruption


# name -> function(image, severity, *, image_id=0, seed=0, scale="auto")
CORRUPTIONS = {name: _registered(name) for name in ALL_CORRUPTIONS}
