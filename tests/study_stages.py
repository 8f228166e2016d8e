"""The stages of a study, run in the test's own process through their Python API
(`<stage>.run(...)`, docs/api.md), so a test can wrap them in tfds's mock data."""
from per_class_accuracy import aggregate_ckpt_metrics, gen_tstatistic, subgroups
from pie.io import records
from pie.io.workdir import Workdir
from pie_dataset_gen import aggregate_predictions, generate_pie_dataset, predictions
from robustness_tests import analyze, corruptions
from save_checkpoint import train

TINY = dict(model="small_cnn", width=4, sparsities="0,0.5", seeds=2, epochs=1, batch_size=1,
            learning_rate=0.01)

__all__ = ["train", "corruptions", "analyze", "subgroups"]


def per_class_and_pie(workdir, tstatistic=True):
    """Clean predictions, per-class metrics (and t-test), the PIE table and its TFRecords."""
    predictions.run(workdir=workdir)
    aggregate_ckpt_metrics.run(workdir=workdir)
    if tstatistic:
        gen_tstatistic.run(workdir=workdir)
    aggregate_predictions.run(workdir=workdir)
    generate_pie_dataset.run(workdir=workdir)


def member_predictions(workdir, member_id="dense_0_seed0", distribution="clean"):
    path = Workdir(workdir).predictions_path(member_id, distribution)
    return records.read_prediction_file(path)
