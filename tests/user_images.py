"""Images as users' TFRecord sets hold them: grey and CMYK JPEGs, PNG bytes in a
record that says JPEG, small sizes (issue 25), written in the ImageNet layout of
tests/imagenet_layout.py."""
import io
import os

import numpy as np
from PIL import Image

import imagenet_layout


def encoded(rng, label, side, mode="RGB", fmt="JPEG"):
    """An image of `side` x (side + 8) px whose colour depends on `label`, encoded in
    `mode` (RGB, L: grey, CMYK) as `fmt` (JPEG or PNG)."""
    base = np.zeros(3)
    base[label % 3] = 170.0
    pixels = np.clip(base + rng.normal(0, 30, size=(side, side + 8, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_mixed_layout(folder, num_classes=3, train_per_shard=8, validation=9, seed=0):
    """The ImageNet layout whose first validation record is a 48-px grey JPEG; among the
    other records CMYK JPEGs, PNG bytes (every record's image/format says jpeg) and
    RGB JPEGs of 40 to 120 px. Returns the (mode, format) of each validation record."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    kinds = [("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG"), ("L", "PNG")]

    def items(count, first=None):
        out, made = [], []
        for i in range(count):
            label = 1 + i % num_classes
            mode, fmt = first if (i == 0 and first) else kinds[int(rng.integers(len(kinds)))]
            side = 48 if (i == 0 and first) else int(rng.integers(40, 121))
            out.append((encoded(rng, label, side, mode, fmt), label,
                        imagenet_layout.TEXTS[label - 1]))
            made.append((mode, fmt))
        return out, made
    for shard in range(2):
        records, _ = items(train_per_shard)
        imagenet_layout.write_shard(os.path.join(folder, f"train-{shard:05d}-of-00002"),
                                    records)
    records, made = items(validation, first=("L", "JPEG"))
    imagenet_layout.write_shard(os.path.join(folder, "validation-00000-of-00001"), records)
    return made
