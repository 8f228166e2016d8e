"""Population training on shared graphs: one built, compiled and traced model per variant.

Training a member costs more than its steady epochs: building the network (and
cloning it with tfmot's pruning wrappers), tracing Keras's train function and
letting TensorFlow optimise its graph on the first call, tracing the evaluation,
and rebuilding an uncompiled copy to save. For the members of one *variant* (same
method, the same graph; only the seed and the target sparsity differ) all of that
is the same work. `SharedModels` does it once per variant and trains the variant's
members on that model one after another. Before each member, every variable is
set to what a freshly built member of that seed holds: the layers' weights from
a new build with the member's seed, the optimizer's slots and step, the pruning
wrappers' masks, thresholds and step as built, and the schedule's target (a
variable of the shared model's schedule, pruning.make_schedule(retargetable=True),
instead of a constant of its graph). Same initial weights, same batch order, same
ops: the member ends with the weights it gets when trained alone.

Members stay independent: each writes its own checkpoint after every epoch (the
shared model has the object graph of a freshly built one, so either path resumes
the other's checkpoints) and its own files.

Not shared (each member builds its own model): models with random layers
(dropout draws would continue from the previous member's random state instead of
starting from the member's seed) and tf.distribute strategies other than the
default one.
"""
import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def has_random_layers(model):
    """Whether any layer draws random numbers while training (dropout, noise)."""
    from tf_keras.src.engine.base_layer import BaseRandomLayer
    return any(isinstance(layer, BaseRandomLayer) for layer in model.submodules)


class SharedModel:
    """One variant's model, re-initialised for each of its members.

    `model` is the compiled training model (possibly with pruning wrappers),
    `optimizer` its optimizer (built), `plain` the plain network whose layers
    are the same objects as `model`'s (the stripped view of a wrapped model, or
    `model` itself): its weights are the ones a fresh build of the architecture
    has, in the same order.
    """

    def __init__(self, model, optimizer, plain):
        import tensorflow as tf
        self.model, self.optimizer, self.plain = model, optimizer, plain
        # As built: the wrappers' masks (ones), thresholds (0) and step (-1), the
        # optimizer's zero slots and step 0. Nothing here depends on the seed.
        self._built_state = model.get_weights()
        self._optimizer_state = [v.numpy() for v in optimizer.variables]
        self._export = None
        # One traced inference function for every member's evaluation.
        self.predict = tf.function(lambda x: plain(x, training=False), reduce_retracing=True)

    def reset(self, initial):
        """Sets every variable to a fresh member's: `initial` is the plain network
        freshly built with the member's seed (its weights are copied, not kept)."""
        self.model.set_weights(self._built_state)
        self.plain.set_weights(initial.get_weights())
        for variable, value in zip(self.optimizer.variables, self._optimizer_state):
            variable.assign(value)
        self.model.reset_metrics()

    def export(self):
        """An uncompiled plain model holding the current member's weights, to save.

        Built once per variant; each member's weights are copied into it.
        """
        import tf_keras as keras
        if self._export is None:
            self._export = keras.Model.from_config(self.plain.get_config())
        self._export.set_weights(self.plain.get_weights())
        return self._export


class SharedModels:
    """Shared models keyed by variant.

    `build(member)` returns (compiled model, built optimizer) of a fresh member;
    `initial(member)` the plain network freshly built with the member's seed;
    `plain_view(model)` the plain network sharing `model`'s layers.
    """

    def __init__(self, build, initial, plain_view):
        self._build, self._initial, self._plain_view = build, initial, plain_view
        self._variants = {}
        self.unshareable = set()

    def get(self, key, member):
        """The variant's shared model, set to `member`'s initial state, or None when
        the variant cannot share (the member then trains on a model of its own)."""
        if key in self.unshareable:
            return None
        shared = self._variants.get(key)
        if shared is not None:
            shared.reset(self._initial(member))
            return shared
        model, optimizer = self._build(member)  # already this member's initial state
        if has_random_layers(model):
            self.unshareable.add(key)
            return None
        shared = self._variants[key] = SharedModel(model, optimizer, self._plain_view(model))
        return shared
