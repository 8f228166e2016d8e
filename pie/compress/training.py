"""Building blocks of the training stage (save_checkpoint.train), free of flags.

Members and their folders, the population plan and its shards, tf.distribute
strategies, evaluation, the unit masks of criterion-pruned members and the
global weight masks (pie.compress.methods).
"""
import os
import platform

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import criteria, pruning
from pie.io import errors, records, shards
from pie.io.workdir import Workdir

# Reference samples of unit criteria are drawn in an order of their own (a
# far-off epoch), so the draw does not depend on --epochs.
REFERENCE_EPOCH = 10 ** 6


class TrainingError(errors.InputError):
    """A member that cannot be recorded (its loss or weights are not finite)."""


class Member:
    """One population member: what to train and where it lives."""

    def __init__(self, method, sparsity, seed):
        self.method, self.sparsity, self.seed = method, sparsity, seed
        self.member_id = f"{records.variant_key(method, sparsity)}_seed{seed}"
        self.relpath = Workdir.member_relpath(method, sparsity, seed)


def check_writable(workdir):
    """The workdir exists and is writable, or could be created, before anything is written."""
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise errors.UsageError(f"workdir '{workdir}' is not writable: '{path}' is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise errors.UsageError(f"workdir '{workdir}' is not writable")


def plan(sparsities, seeds, method, shard, seed_slice=(0, 1)):
    """The members to train, in training order: the i-th of the population goes to
    shard i mod n (`shard` = (i, n)); of those, the ones whose seed is k mod m
    (`seed_slice` = (k, m), one worker process's: a member and its parent network,
    which has its seed, stay in one worker)."""
    from pie.compress import methods
    zero = method if methods.get(method).keeps_zero_level else methods.DENSE
    members = [Member(zero if s == 0 else method, s, seed)
               for s in sparsities for seed in range(seeds)]
    worker, workers = seed_slice
    return [m for m in shards.select(members, shard) if m.seed % workers == worker]


def set_threads(threads, required=True):
    """TensorFlow's CPU threads (intra- and inter-op) of this process; 0 keeps its
    default. Only before TensorFlow runs its first op: after it, an error when
    `required`, else the setting is left as it is (only speed depends on it)."""
    if not threads:
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        if required and tf.config.threading.get_intra_op_parallelism_threads() != threads:
            raise errors.UsageError(
                f"--threads={threads} must be set before TensorFlow runs its first op: "
                "give it to a stage started as its own process (python -m)")


def make_strategy(name, tpu):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise errors.UsageError("--strategy=multi_worker needs the TF_CONFIG environment "
                                 "variable describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not tpu:
        raise errors.UsageError("--strategy=tpu needs --tpu=<name or address>")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Only the chief of a multi-worker job writes models and manifest rows."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def package_versions():
    import numpy
    import tensorflow as tf
    from pie.compress import tfmot_loader
    tfmot = tfmot_loader.load()
    import tf_keras
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "tfmot": tfmot.__version__,
            "numpy": numpy.__version__}


def evaluate_top1(model, source, batch_size, predict=None, batches=None):
    """Top-1 accuracy on the eval split; `predict` (inputs -> logits, e.g. a traced
    function of `model`) replaces calling the model eagerly; `batches` (dicts of
    `inputs` and `label`, e.g. EvalCache's) replaces reading the split."""
    import numpy as np
    predict = predict or (lambda inputs: model(inputs, training=False))
    correct = total = 0
    if batches is None:
        batches = source.eval_batches(batch_size).as_numpy_iterator()
    for batch in batches:
        logits = np.asarray(predict(batch["inputs"]))
        correct += int(np.sum(logits.argmax(axis=1) == batch["label"]))
        total += len(batch["label"])
    return correct / total


def eval_logits(model, source, batch_size, predict=None, batches=None):
    """(logits, labels, image ids) of the eval split: one pass, the member's clean
    predictions and top-1 both come from it. `predict` (inputs -> logits, e.g. a
    traced function of `model`) replaces calling the model eagerly; `batches` (dicts of
    `inputs`, `label` and `image_id`, e.g. EvalCache's) replaces reading the split."""
    import numpy as np
    predict = predict or (lambda inputs: model(inputs, training=False))
    if batches is None:
        batches = source.eval_batches(batch_size).as_numpy_iterator()
    logits, labels, ids = [], [], []
    for batch in batches:
        logits.append(np.asarray(predict(batch["inputs"])))
        labels.append(batch["label"])
        ids.append(batch["image_id"])
    if not labels:
        raise errors.DataError("the eval split is empty")
    return np.concatenate(logits), np.concatenate(labels), np.concatenate(ids)


class EvalCache:
    """The eval split's batches, read once and kept for every member's evaluation
    when they fit in `max_bytes` as float32 inputs (an embedded set: about 3 MB for
    mnist5k); a larger split is read again for each member."""

    def __init__(self, source, batch_size, max_bytes=256 << 20):
        import numpy as np
        self.source, self.batch_size = source, batch_size
        size = (source.eval_size or 0) * int(np.prod(source.raw_shape)) * 4
        # Images of varied sizes (a dimension 0): their size is not known here.
        self.keep = source.eval_size is not None and 0 < size <= max_bytes
        self._batches = None

    def batches(self):
        if not self.keep:
            return None
        if self._batches is None:
            self._batches = [{"inputs": batch["inputs"], "label": batch["label"],
                              "image_id": batch["image_id"]} for batch
                             in self.source.eval_batches(self.batch_size).as_numpy_iterator()]
        return self._batches


def uncompiled(model):
    """A copy without optimizer state, so every member's file holds only its weights."""
    import tf_keras as keras
    # clone_model rebuilds Sequential and functional models alike (a model given with
    # --init_from may be either); Model.from_config only takes functional configs.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def reference_samples(source, per_class, seed):
    """`per_class` training images of every class, drawn in a seeded order."""
    import numpy as np
    xs, ys = [], []
    counts = np.zeros(source.num_classes, np.int64)
    stream = source.train_batches(256, seed, epoch=REFERENCE_EPOCH, augment=False)
    for x, y in stream.as_numpy_iterator():
        y = np.asarray(y).reshape(-1)
        rank = np.zeros(len(y), np.int64)
        for label in np.unique(y):
            rank[y == label] = counts[label] + np.arange(np.sum(y == label))
        keep = rank < per_class
        xs.append(x[keep])
        ys.append(y[keep])
        counts += np.bincount(y[keep], minlength=source.num_classes)
        if (counts >= per_class).all():
            break
    return np.concatenate(xs), np.concatenate(ys)


def write_mask(path, mask):
    import numpy as np
    with records.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **mask)


def load_mask(path):
    import numpy as np
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def check_unit_sparsity(mask, target):
    """The removed share of units matches the target, up to one unit of rounding."""
    total = sum(len(keep) for keep in mask.values())
    removed = criteria.mask_summary(mask)["overall"]
    if abs(removed - target) > max(pruning.SPARSITY_TOLERANCE, 1.0 / total):
        raise pruning.PruningError(
            f"removed {removed:.4f} of the units, not the target {target:g}")


def prune_weights(model, method, sparsity, layer_names, x=None, count_biases=False):
    """Zeroes the globally lowest-scored `sparsity` of the kernels' weights; the masks.

    `method` is a registered method with one global weight ranking (wt, sipp,
    sipp_mean: pie.compress.methods); `x` are the reference samples (sipp,
    sipp_mean). `count_biases`: the prune ratio counts the layers' biases too, as
    torchprune's does (criteria.sipp_removed_weights), so a little more than
    `sparsity` of the kernel weights goes; the training stage measures and checks
    sparsity over kernel weights, so it leaves this off.
    """
    from pie.compress import builtin_methods, methods
    global_weights = [name for name in methods.names()
                      if isinstance(methods.get(name), builtin_methods.GlobalWeights)]
    if method not in global_weights:
        raise pruning.PruningError(f"unknown weight-pruning method '{method}'; allowed: "
                                   f"{', '.join(global_weights)}")
    if count_biases:
        total = sum(int(model.get_layer(name).kernel.shape.num_elements())
                    for name in layer_names)
        sparsity = criteria.sipp_removed_weights(model, layer_names, sparsity) / total
    return methods.get(method).one_shot_mask(model, sparsity, (x, None), 0, layer_names)
