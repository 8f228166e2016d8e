"""Two-dimensional toy classification data: moons, circles, spirals.

The data sets of the toy study in Yeom et al., "Pruning by Explaining": sklearn's
two moons (noise 0.1), two concentric circles (noise 0.1, factor 0.3) and four
interleaved spiral arms. Every generator returns balanced classes, shuffled, as
float32 points of shape (n, 2) and int64 labels, and is deterministic in `seed`.

    points, labels = make_toy("moons", 2000, seed=3)
"""
import numpy as np
from sklearn import datasets as sk_datasets

# The toy study's tables (pie.stages.toy_experiment writes them, the report reads them).
RESULT_COLUMNS = ["dataset", "criterion", "samples_per_class", "seed", "scenario",
                  "stage", "accuracy"]
RANK_COLUMNS = ["dataset", "samples_per_class", "seed", "criterion_a", "criterion_b",
                "statistic", "k", "value"]
SPIRAL_ARMS = 4
# Width of each spiral arm in radians of angle (arm k spans [4k, 4k + 4]).
SPIRAL_ARM_SPAN = 4.0
SPIRAL_ANGLE_NOISE = 0.2


def _moons(n, noise, rng):
    points, labels = sk_datasets.make_moons(
        n_samples=n, noise=noise, shuffle=False, random_state=rng)
    return points, labels


def _circles(n, noise, rng):
    points, labels = sk_datasets.make_circles(
        n_samples=n, noise=noise, factor=0.3, shuffle=False, random_state=rng)
    return points, labels


def _spirals(n, noise, rng):
    per_arm = n // SPIRAL_ARMS
    # Radius and angle grow together along an arm, which is what makes it a spiral.
    radius = np.linspace(0.0, 1.0, per_arm)
    points, labels = [], []
    for arm in range(SPIRAL_ARMS):
        start = SPIRAL_ARM_SPAN * arm
        angle = np.linspace(start, start + SPIRAL_ARM_SPAN, per_arm)
        angle = angle + noise * rng.standard_normal(per_arm)
        points.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        labels.append(np.full(per_arm, arm))
    return np.concatenate(points), np.concatenate(labels)


class ToyDataset:
    """A named generator with its class count and default noise."""

    def __init__(self, name, num_classes, default_noise, generate):
        self.name = name
        self.num_classes = num_classes
        self.default_noise = default_noise
        self._generate = generate

    def __call__(self, n, noise, rng):
        return self._generate(n, noise, rng)


TOY_DATASETS = {
    "moons": ToyDataset("moons", 2, 0.1, _moons),
    "circles": ToyDataset("circles", 2, 0.1, _circles),
    "spirals": ToyDataset("spirals", SPIRAL_ARMS, SPIRAL_ANGLE_NOISE, _spirals),
}


def get_toy_dataset(name):
    """The registered `ToyDataset` called `name`."""
    if name not in TOY_DATASETS:
        raise ValueError(
            f"unknown toy dataset {name!r}; allowed: {', '.join(sorted(TOY_DATASETS))}")
    return TOY_DATASETS[name]


def num_classes(name):
    """How many classes the toy dataset `name` has."""
    return get_toy_dataset(name).num_classes


def make_toy(name, n, *, noise=None, seed=0):
    """Draws `n` labelled points of the toy dataset `name`.

    Args:
      name: a key of `TOY_DATASETS` (`moons`, `circles`, `spirals`).
      n: number of points, a positive multiple of the class count (balanced classes).
      noise: the generator's noise (standard deviation of the coordinate noise for
        moons and circles, of the angular noise for spirals); None for the default
        of the study (0.1, 0.1, 0.2).
      seed: integer seed; the same seed gives the same points.

    Returns:
      (points, labels): float32 array (n, 2), int64 array (n,), rows shuffled.
    """
    dataset = get_toy_dataset(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 \
            or n % dataset.num_classes:
        raise ValueError(
            f"n must be a positive multiple of {dataset.num_classes} for {name} "
            f"(balanced classes), got {n!r}")
    if noise is None:
        noise = dataset.default_noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) \
            or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    rng = np.random.RandomState(seed)
    points, labels = dataset(int(n), float(noise), rng)
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order].astype(np.int64)
