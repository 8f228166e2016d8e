"""Severity tables of the ImageNet-C / CIFAR-10-C corruptions.

Each entry is a 5-tuple: the parameter of severities 1..5. `IMAGENET_TABLE` holds
the values Hendrycks & Dietterich used for 224-px ImageNet-C, `CIFAR_TABLE` the
ones for 32-px CIFAR-10-C. The meaning of each parameter is given next to it and in
docs/corruptions.md. Pixel-valued parameters (blur radii, kernel sigmas) are in
pixels of the image being corrupted; relative ones (zoom factors, pixelate scale)
do not depend on its size.
"""

IMAGENET = "imagenet"
CIFAR = "cifar"
AUTO = "auto"
SCALES = (IMAGENET, CIFAR, AUTO)

# Images whose short side is below this many pixels use the CIFAR table under
# scale="auto" (28-px MNIST, 32-px CIFAR); larger ones the ImageNet table.
AUTO_CIFAR_BELOW = 64

# elastic_transform's (alpha, sigma, affine) are fractions of the image size. The
# published 224-px code multiplies them by 244 (not 224), so the ImageNet table is
# scaled by short side * 244 / 224 to reproduce it at 224 px.
ELASTIC_SIZE_FACTOR = {IMAGENET: 244.0 / 224.0, CIFAR: 1.0}

# frost: the frost texture is used at its own pixel scale for ImageNet and
# shrunk by this factor for CIFAR (as the published CIFAR code does).
FROST_TEXTURE_ZOOM = {IMAGENET: 1.0, CIFAR: 0.2}

IMAGENET_TABLE = {
    # additive Gaussian sigma
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # Poisson rate: x -> Poisson(x * c) / c
    "shot_noise": (60, 25, 12, 5, 3),
    # share of values replaced by 0 or 1 (salt and pepper, half each)
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    # (disk radius px, anti-alias Gaussian sigma px)
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    # (Gaussian sigma px, max swap distance px, swap passes)
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    # (kernel radius px, Gaussian sigma px along the streak); angle U(-45, 45) deg
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    # zoom factors 1, 1 + step, ... below end: (end, step)
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    # (flake mean, flake std, layer zoom, flake threshold, streak radius px,
    #  streak sigma px, weight of the unwhitened image)
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
             (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    # (image weight, frost texture weight)
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    # (fog strength, plasma roughness decay)
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    # added to HSV value
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    # factor on the distance to the per-channel mean
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # (displacement alpha, displacement smoothing sigma, affine jitter), x size
    "elastic_transform": ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02),
                          (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)),
    # side of the box-downscaled image, as a share of the original side
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    # JPEG quality
    "jpeg_compression": (25, 18, 15, 10, 7),
    # multiplicative Gaussian sigma: x + x * N(0, c)
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    # Gaussian sigma px
    "gaussian_blur": (1, 2, 3, 4, 6),
    # (liquid mean, liquid std, liquid smoothing sigma px, liquid threshold,
    #  water: shading strength / mud: mask smoothing sigma px, 0 = water 1 = mud)
    "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0),
                (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1)),
    # HSV saturation: S -> clip(S * a + b)
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}

CIFAR_TABLE = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95),
             (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0),
                (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

PARAMETER_TABLES = {IMAGENET: IMAGENET_TABLE, CIFAR: CIFAR_TABLE}
