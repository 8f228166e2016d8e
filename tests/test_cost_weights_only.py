"""Cost measures the model (issue 25.7): a Keras file that still holds its optimizer's
slots costs what the same weights cost without them."""
import gzip
import os

import numpy as np
import pandas as pd

import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import user_models
from pie.compress import training
from pie.io import records
from pie.stages import cost
from save_checkpoint import import_members


def test_optimizer_slots_are_not_counted(tmp_path):
    import tf_keras as keras
    model = user_models.prune_by_hand(user_models.nested_digits_model(), 0.7)
    folder = tmp_path / "models"
    folder.mkdir()
    plain, with_slots = str(folder / "net_seed0.keras"), str(folder / "net_seed1.keras")
    training.uncompiled(model).save(plain)  # the weights alone
    model.save(with_slots)  # compiled and trained: Adam's two slots per weight
    assert isinstance(keras.models.load_model(with_slots).optimizer, keras.optimizers.Adam)
    sizes = {path: os.path.getsize(path) for path in (plain, with_slots)}
    assert sizes[with_slots] > 2 * sizes[plain]  # what the table measured before
    workdir = str(tmp_path / "w")
    import_members.run(workdir=workdir, dataset="digits", models=str(folder / "*.keras"),
                       method="mine", sparsity=0.7, seed_from=r"regex:seed(\d+)")
    cost.run(workdir=workdir, repeats=2, warmup=0)
    table = pd.read_csv(os.path.join(workdir, "quantization", "cost.csv")).set_index("seed")
    for column in ("file_bytes", "gzip_bytes"):
        assert abs(table.loc[1, column] / table.loc[0, column] - 1) < 0.02, column
    # The file without slots costs what it is, gzip (level 6) included (within a few bytes:
    # saved again, its zip holds another date).
    with open(plain, "rb") as handle:
        content = handle.read()
    assert abs(table.loc[0, "file_bytes"] - len(content)) <= 16
    assert abs(table.loc[0, "gzip_bytes"] - len(gzip.compress(content, 6, mtime=0))) <= 64
    assert table.loc[0, "params"] == table.loc[1, "params"] == sum(
        int(np.size(w)) for w in model.get_weights())
    assert (records.read_manifest(workdir)["measured_sparsity"] - 0.7).abs().max() < 0.01
