"""Training curves of the report: each population's history.csv rows (loss, accuracy,
learning rate, sparsity per epoch; pie.compress.history), mean and band over seeds.

A population is a variant (method, sparsity). Its curve at epoch e is the mean over
the members that have a row for e; the band spans the lowest and highest member.
Members without a history.csv (trained before it existed, or imported) are left
out and counted.
"""
import numpy as np
import pandas as pd

from pie.compress import history
from pie.io import records
from pie.io.workdir import Workdir
from pie.report import plots

PANELS = (("loss", "training loss"), ("accuracy", "training accuracy"),
          ("learning_rate", "learning rate"), ("sparsity", "sparsity"))
# Added to each history row: the member's variant (the manifest's `sparsity` is the
# target; history's own `sparsity` column is the one measured at each epoch) and seed.
MEMBER_COLUMNS = ("method", "target_sparsity", "seed")
MAX_ROWS = 100_000  # epochs per member read at most (a history is one row an epoch)


def read_histories(workdir, manifest):
    """(rows of every member's history with MEMBER_COLUMNS added, number of members
    without a readable history)."""
    frames, missing = [], 0
    root = Workdir(workdir)
    for _, member in manifest.iterrows():
        relpath = str(member["path"])
        relative = root.member_relfile(relpath, "history")
        path = root.path(relative)
        if records._inside(workdir, relative) is not None:  # a path leaving the workdir
            missing += 1
            continue
        try:
            frame = records.read_csv(path, history.COLUMNS, check_record=False,
                                     usecols=list(history.COLUMNS), nrows=MAX_ROWS)
            frame = frame.apply(pd.to_numeric, errors="coerce")
        except records.ContractError:
            missing += 1
            continue
        frame = frame[np.isfinite(frame["epoch"])]
        if frame.empty:
            missing += 1
            continue
        frames.append(frame.assign(method=member["method"],
                                   target_sparsity=float(member["sparsity"]),
                                   seed=member["seed"]))
    if not frames:
        return pd.DataFrame(columns=list(history.COLUMNS) + list(MEMBER_COLUMNS)), missing
    return pd.concat(frames, ignore_index=True), missing


def population_curves(rows):
    """Per (method, sparsity, epoch) and column: mean, min and max over members."""
    values = [name for name, _ in PANELS]
    grouped = rows.groupby(["method", "target_sparsity", "epoch"])[values]
    return grouped.agg(["mean", "min", "max", "count"])


def training_curves(rows, colors):
    """PNG: one panel per column of PANELS, a line (mean) and band (min-max over
    seeds) per population."""
    import matplotlib.pyplot as plt
    curves = population_curves(rows)
    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.0 * len(PANELS), 3.2))
    sparsities = sorted(rows["target_sparsity"].unique())
    for (method, sparsity), block in curves.groupby(level=["method", "target_sparsity"]):
        epochs = block.index.get_level_values("epoch")
        # Sparser populations are drawn darker within a method's colour.
        shade = 0.35 + 0.65 * (sparsities.index(sparsity) + 1) / len(sparsities)
        label = f"{method} {sparsity:g}"
        for axis, (column, title) in zip(axes, PANELS):
            mean = block[(column, "mean")].to_numpy(float)
            axis.plot(epochs, mean, color=colors.get(method, "#444444"), alpha=shade,
                      label=label, linewidth=1.4)
            axis.fill_between(epochs, block[(column, "min")].to_numpy(float),
                              block[(column, "max")].to_numpy(float),
                              color=colors.get(method, "#444444"), alpha=0.12 * shade,
                              linewidth=0)
    for index, (axis, (column, title)) in enumerate(zip(axes, PANELS)):
        if column == "learning_rate" and (rows["learning_rate"] > 0).all():
            axis.set_yscale("log")
        plots._finish(axis, "epoch", title, legend=index == 0)
    figure.tight_layout()
    return plots.to_png(figure)


def final_epochs(rows, variants):
    """Per variant (in `variants`' order: its method, sparsity, label and members):
    members with a history, their last epoch, and the mean loss, accuracy and
    learning rate of that epoch (NaN without histories)."""
    table = []
    for _, variant in variants.iterrows():
        mine = rows[(rows["method"] == variant["method"])
                    & (rows["target_sparsity"] == float(variant["sparsity"]))]
        last = mine[mine["epoch"] == mine["epoch"].max()] if not mine.empty else mine
        table.append({"label": variant["label"], "members": int(variant["members"]),
                      "with_history": int(mine["seed"].nunique()),
                      "epochs": int(last["epoch"].max()) if not last.empty else None,
                      "loss": float(last["loss"].mean()) if not last.empty else np.nan,
                      "accuracy": float(last["accuracy"].mean()) if not last.empty
                      else np.nan,
                      "learning_rate": float(last["learning_rate"].mean())
                      if not last.empty else np.nan})
    return table
