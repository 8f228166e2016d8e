"""Figures of the toy pruning-criteria study (matplotlib, Agg backend, PNG)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

matplotlib.rcParams["text.parse_math"] = False  # dataset names are text, never mathtext
import numpy as np  # noqa: E402

from pie.io import records  # noqa: E402

SCENARIO_TITLES = {"train": "training data", "noisy_test": "noisy test data"}


def plain_log_axis(axis):
    """A log-scaled x axis labelled with plain numbers (1, 10, 100). Matplotlib's log
    labels are mathtext ("$\\mathdefault{10^{0}}$"), which this module turns off
    (parse_math) and so would print raw."""
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())


def _save(figure, path):
    """Writes the figure atomically and records it (bytes, digest) in the writing
    stage's stamp: the report embeds only figures listed there."""
    with records.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    records.record_written(path)


def plot_accuracy_curves(results, path, title):
    """Mean and std of post-pruning accuracy against samples per class.

    One panel per scenario, one line per criterion (shaded: +- one standard
    deviation over seeds); the dashed line is the unpruned networks' mean accuracy.
    """
    scenarios = [s for s in SCENARIO_TITLES if s in set(results["scenario"])]
    figure, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4),
                                squeeze=False)
    for axis, scenario in zip(axes[0], scenarios):
        rows = results[results["scenario"] == scenario]
        after = rows[rows["stage"] == "after"]
        stats = after.groupby(["criterion", "samples_per_class"])["accuracy"].agg(["mean", "std"])
        for criterion in after["criterion"].unique():
            curve = stats.loc[criterion]
            spread = curve["std"].fillna(0.0)
            line, = axis.plot(curve.index, curve["mean"], marker="o", label=criterion)
            axis.fill_between(curve.index, curve["mean"] - spread, curve["mean"] + spread,
                              color=line.get_color(), alpha=0.15)
        # One unpruned accuracy per seed (repeated across criteria and n).
        unpruned = rows[rows["stage"] == "before"].groupby("seed")["accuracy"].first().mean()
        axis.axhline(unpruned, color="black", linestyle="--", label="unpruned")
        plain_log_axis(axis)
        axis.set_xlabel("reference samples per class")
        axis.set_ylabel("accuracy after pruning")
        axis.set_title(f"{title}: {SCENARIO_TITLES[scenario]}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)


def plot_decision_boundaries(path, title, train_x, train_y, reference_x, reference_y,
                             grid_x, grid_y, unpruned, panels):
    """Training data with the unpruned boundary, then one panel per pruned network.

    Args:
      unpruned: predicted labels of the unpruned network on the grid (grid_x.shape).
      panels: list of (panel title, predicted labels on the grid) after pruning;
        these panels also show the reference samples the criteria scored.
    """
    columns = len(panels) + 1
    figure, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.4), squeeze=False)
    classes = int(max(train_y.max(), unpruned.max())) + 1
    levels = np.arange(classes + 1) - 0.5
    cmap = plt.get_cmap("coolwarm" if classes == 2 else "viridis", classes)
    axes = axes[0]
    axes[0].contourf(grid_x, grid_y, unpruned, levels=levels, cmap=cmap, alpha=0.3)
    axes[0].scatter(train_x[:, 0], train_x[:, 1], c=train_y, cmap=cmap, s=3,
                    vmin=-0.5, vmax=classes - 0.5)
    axes[0].set_title("training data, unpruned")
    for axis, (panel_title, predicted) in zip(axes[1:], panels):
        axis.contourf(grid_x, grid_y, predicted, levels=levels, cmap=cmap, alpha=0.3)
        axis.scatter(reference_x[:, 0], reference_x[:, 1], c=reference_y, cmap=cmap, s=30,
                     edgecolors="black", vmin=-0.5, vmax=classes - 0.5)
        axis.set_title(panel_title, fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)
