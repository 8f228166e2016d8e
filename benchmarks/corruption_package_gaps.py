r"""Where the `imagecorruptions` package departs from the published ImageNet-C code.

Two figures of docs/corruptions.md that the agreement table (which compares like
with like) does not show:

- elastic_transform: the package draws no affine warp and uses a displacement
  field of its own; the published `make_imagenet_c.py` warps, then displaces. Rows:
  the mean absolute change of ours, of the published definition
  (`corruption_agreement.published_elastic`) and of the package, unpaired, on the
  same photographs.
- frost unstratified: the package draws among six photographs where the published
  generators (and ours) draw among the first five; without stratifying by
  photograph the two means differ by that sixth, darkest photograph (and by
  sampling noise: the `package reseeded` column).

    python benchmarks/corruption_package_gaps.py [--samples=48]

The measure is `corruption_agreement.mean_abs_change` at 224 px. The last line is
`elastic_published_over_package_severity_one=<ratio>`.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import corruption_agreement as A  # noqa: E402
from pie.shift import corruptions as C  # noqa: E402


def package_change(name, severity, images, samples, seed=0):
    """The package's mean absolute change over `samples` (image, draw) pairs,
    unstratified (draw k seeded from (seed, k) alone)."""
    from imagecorruptions import corruption_dict
    total = 0.0
    for k in range(samples):
        np.random.seed((seed * 1_000_003 + 7919 * k) % 2 ** 32)
        image = images[k % len(images)]
        out = np.asarray(corruption_dict[name](Image.fromarray(image), severity), np.float64)
        total += A.mean_abs_change(image, out / 255)
    return total / samples


def elastic_rows(samples, seed=0):
    images = A.images_for("imagenet", min(samples, 16))
    for severity in C.SEVERITIES:
        ours = A.our_change("elastic_transform", severity, images, samples, seed)
        published = A.reference_change("elastic_transform", severity, images, samples, seed)
        package = package_change("elastic_transform", severity, images, samples, seed)
        yield severity, ours, published, package


def frost_rows(samples, seed=0):
    images = A.images_for("imagenet", min(samples, 16))
    stratified = A.STRATIFIED
    A.STRATIFIED = {}  # our draw k: image id k, whatever photograph it picks
    try:
        for severity in C.SEVERITIES:
            ours = A.our_change("frost", severity, images, samples, seed)
            package = package_change("frost", severity, images, samples, seed)
            again = package_change("frost", severity, images, samples, seed + 1)
            yield severity, ours, package, again / package
    finally:
        A.STRATIFIED = stratified


def main(argv):
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    samples = 48
    for arg in argv[1:]:
        if arg.startswith("--samples="):
            samples = int(arg.split("=", 1)[1])
        else:
            print(f"error: unknown argument {arg}; allowed: --samples=N", file=sys.stderr)
            return 2
    if samples < 1:
        print(f"error: --samples must be >= 1, got {samples}", file=sys.stderr)
        return 2
    first = None
    print("| corruption | severity | samples | ours | published | package | ours / published "
          "| published / package |")
    print("|---|---|---|---|---|---|---|---|")
    for severity, ours, published, package in elastic_rows(samples):
        first = first or published / package
        print(f"| `elastic_transform` | {severity} | {samples} | {ours:.4f} | {published:.4f} "
              f"| {package:.4f} | {ours / published:.3f} | {published / package:.3f} |",
              flush=True)
    print()
    print("| corruption | severity | samples | ours | package | ours / package "
          "| package reseeded |")
    print("|---|---|---|---|---|---|---|")
    for severity, ours, package, reseeded in frost_rows(samples):
        print(f"| `frost` (unstratified) | {severity} | {samples} | {ours:.4f} | {package:.4f} "
              f"| {ours / package:.3f} | {reseeded:.3f} |", flush=True)
    print(f"elastic_published_over_package_severity_one={first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
