"""Keras models as users write them (issue 25.4): a backbone model inside a wrapper
with its own preprocessing, layers inside sub-models; trained briefly on digits."""
import numpy as np

import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)


def nested_digits_model(epochs=3, seed=0):
    """Wrapper(Rescaling -> backbone -> head) where backbone = (conv block -> Dense)
    and the conv block is a model of its own: kernels two levels down."""
    import tf_keras as keras
    from pie.data import sources
    keras.utils.set_random_seed(seed)
    block_in = keras.layers.Input((8, 8, 1))
    block = keras.Model(block_in, keras.layers.Conv2D(8, 3, padding="same",
                                                      activation="relu")(block_in),
                        name="conv_block")
    backbone_in = keras.layers.Input((8, 8, 1))
    features = keras.layers.Flatten()(block(backbone_in))
    backbone = keras.Model(backbone_in, keras.layers.Dense(32, activation="relu")(features),
                           name="backbone")
    inputs = keras.layers.Input((8, 8, 1))
    scaled = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # its own preprocessing
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(backbone(scaled)))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if epochs:
        model.fit(sources.load("digits").train_batches(32, 0, 0), epochs=epochs, verbose=0)
    return model


def all_kernels(model):
    """Every Conv2D / Dense kernel, however deep, walked independently of the library."""
    import tf_keras as keras
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += all_kernels(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            found.append(layer.kernel)
    return found


def zero_share(model):
    kernels = [k.numpy() for k in all_kernels(model)]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


def prune_by_hand(model, sparsity):
    """Zeroes the smallest `sparsity` share of every kernel (in place)."""
    for kernel in all_kernels(model):
        values = kernel.numpy()
        cut = int(round(sparsity * values.size))
        order = np.argsort(np.abs(values), axis=None)[:cut]
        values.ravel()[order] = 0
        kernel.assign(values)
    return model
