"""Tests of pie.data.toy_data: shapes, balance, determinism, geometry, errors."""
import numpy as np
import pytest

from pie.data import toy_data


@pytest.mark.parametrize("name", sorted(toy_data.TOY_DATASETS))
def test_shapes_dtypes_and_balanced_classes(name):
    classes = toy_data.num_classes(name)
    points, labels = toy_data.make_toy(name, 40 * classes, seed=3)
    assert points.shape == (40 * classes, 2) and points.dtype == np.float32
    assert labels.shape == (40 * classes,) and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), np.full(classes, 40))


@pytest.mark.parametrize("name", sorted(toy_data.TOY_DATASETS))
def test_deterministic_in_seed(name):
    first = toy_data.make_toy(name, 200, seed=5)
    again = toy_data.make_toy(name, 200, seed=5)
    other = toy_data.make_toy(name, 200, seed=6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_rows_are_shuffled():
    _, labels = toy_data.make_toy("spirals", 400, seed=0)
    # Sorted blocks would make the first 100 labels all equal.
    assert len(np.unique(labels[:100])) == 4


def test_default_noise_is_the_study_noise():
    for name, noise in (("moons", 0.1), ("circles", 0.1), ("spirals", 0.2)):
        default = toy_data.make_toy(name, 100 * toy_data.num_classes(name), seed=1)
        explicit = toy_data.make_toy(name, 100 * toy_data.num_classes(name), noise=noise, seed=1)
        np.testing.assert_array_equal(default[0], explicit[0])


def test_noise_free_moons_lie_on_the_two_half_circles():
    points, labels = toy_data.make_toy("moons", 200, noise=0.0, seed=0)
    outer, inner = points[labels == 0], points[labels == 1]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1.0, inner[:, 1] - 0.5), 1.0, atol=1e-6)


def test_noise_free_circles_have_radius_one_and_factor():
    points, labels = toy_data.make_toy("circles", 200, noise=0.0, seed=0)
    radius = np.hypot(points[:, 0], points[:, 1])
    np.testing.assert_allclose(radius[labels == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(radius[labels == 1], 0.3, atol=1e-6)


def test_noise_free_spiral_arms_follow_radius_and_angle():
    per_arm = 50
    points, labels = toy_data.make_toy("spirals", 4 * per_arm, noise=0.0, seed=0)
    for arm in range(4):
        arm_points = points[labels == arm].astype(np.float64)
        radius = np.hypot(arm_points[:, 0], arm_points[:, 1])
        order = np.argsort(radius)
        np.testing.assert_allclose(radius[order], np.linspace(0, 1, per_arm), atol=1e-6)
        # Point (r sin t, r cos t) with t = 4k + 4r: compare angles on the circle.
        angle = np.arctan2(arm_points[:, 0], arm_points[:, 1])
        expected = 4.0 * arm + 4.0 * radius
        difference = np.angle(np.exp(1j * (angle - expected)))
        np.testing.assert_allclose(difference[radius > 0.05], 0.0, atol=1e-4)


def test_spiral_angular_noise_scales_with_noise():
    clean, labels = toy_data.make_toy("spirals", 4000, noise=0.0, seed=2)
    noisy, noisy_labels = toy_data.make_toy("spirals", 4000, noise=0.2, seed=2)
    np.testing.assert_array_equal(labels, noisy_labels)
    # Angular noise keeps the radius.
    np.testing.assert_allclose(np.sort(np.hypot(*clean.T)), np.sort(np.hypot(*noisy.T)),
                               atol=1e-6)
    assert not np.allclose(clean, noisy)


def test_registry_and_class_counts():
    assert sorted(toy_data.TOY_DATASETS) == ["circles", "moons", "spirals"]
    assert [toy_data.num_classes(n) for n in ("moons", "circles", "spirals")] == [2, 2, 4]


def test_errors():
    with pytest.raises(ValueError, match=r"^unknown toy dataset 'blobs'; allowed: "
                                         r"circles, moons, spirals$"):
        toy_data.make_toy("blobs", 10)
    with pytest.raises(ValueError, match=r"^n must be a positive multiple of 4 for spirals "
                                         r"\(balanced classes\), got 10$"):
        toy_data.make_toy("spirals", 10)
    with pytest.raises(ValueError, match=r"^n must be a positive multiple of 2 for moons "
                                         r"\(balanced classes\), got 0$"):
        toy_data.make_toy("moons", 0)
    with pytest.raises(ValueError, match=r"^noise must be a finite number >= 0, got -0.1$"):
        toy_data.make_toy("moons", 10, noise=-0.1)
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*32\), "
                                         r"got -1$"):
        toy_data.make_toy("moons", 10, seed=-1)
