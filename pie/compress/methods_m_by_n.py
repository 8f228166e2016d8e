"""`--method=m_by_n`: N:M structured sparsity (2:4 by default), tfmot's `sparsity_m_by_n`.

Each member starts from the dense member of its seed, its prunable kernels wrapped
by `prune_low_magnitude(..., sparsity_m_by_n=(m, n))` and fine-tuned for
--finetune_epochs: in every group of n consecutive weights along a kernel's input
channels at least m are zero (tfmot's groups: a kernel whose input channels are
not a multiple of n ends in a group padded with zeros). The member is recorded at
sparsity m/n (0.5 for 2:4): `--sparsities=0.5` selects it.
"""
import numpy as np

from pie.compress import from_parent, methods
from pie.io import errors


def parse_m_by_n(text):
    """(m, n) of --m_by_n: integers with 0 < m < n."""
    try:
        m, n = (int(part) for part in str(text).split(","))
    except ValueError:
        m, n = 0, 0
    if not 0 < m < n:
        raise errors.UsageError(f"--m_by_n must be m,n with integers 0 < m < n (at least m "
                                f"zeros in every n consecutive weights), got '{text}'")
    return m, n


def pattern_sparsity(m_by_n):
    m, n = m_by_n
    return m / n


def input_channel_groups(kernel, n):
    """The kernel as rows of n consecutive weights along its input channels (TFLite's
    last axis: [out, h, w, in] for convolutions, [out, in] for dense kernels), the
    last group of each row padded with zeros as tfmot does."""
    kernel = np.asarray(kernel)
    if kernel.ndim == 4:
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    elif kernel.ndim == 2:
        rows = kernel.T
    else:
        raise errors.PruningError(f"m_by_n prunes rank-2 and rank-4 kernels, got shape "
                                  f"{kernel.shape}")
    pad = (-rows.shape[1]) % n
    rows = np.pad(rows, ((0, 0), (0, pad)))
    return rows.reshape(-1, n)


def follows_pattern(kernel, m_by_n):
    """Whether every group of n input-channel weights of `kernel` has at least m zeros."""
    m, n = m_by_n
    groups = input_channel_groups(kernel, n)
    return bool(np.all(np.count_nonzero(groups == 0, axis=1) >= m))


class MByN(from_parent.FromParent):
    name = "m_by_n"
    option_fields = ("m_by_n",)
    description = "N:M structured sparsity (tfmot sparsity_m_by_n), from the dense member"

    def check_config(self, config):
        m_by_n = parse_m_by_n(config.m_by_n)
        if config.method != self.name:
            return
        sparsity = pattern_sparsity(m_by_n)
        allowed = {0.0, float(f"{sparsity:.6g}")}
        if not set(config.levels) <= allowed or not any(level > 0 for level in config.levels):
            raise errors.UsageError(
                f"--method=m_by_n with --m_by_n={config.m_by_n} records its members at "
                f"sparsity {sparsity:g}: --sparsities must be {sparsity:g} (or 0,{sparsity:g}),"
                f" got '{config.sparsities}'")

    def derive(self, trainer, member, parent_model, parent_row):
        from pie.compress import pruning
        tfmot = pruning.tfmot
        import tf_keras as keras
        config = trainer.config
        m_by_n = parse_m_by_n(config.m_by_n)
        names = set(pruning.prunable_layer_names(parent_model, config.prune_classifier))
        # Constant target from step 0, mask updated every step: the pattern holds from
        # the first fine-tuning step (the schedule's sparsity is unused with m_by_n).
        schedule = tfmot.sparsity.keras.ConstantSparsity(
            pattern_sparsity(m_by_n), begin_step=0, frequency=1)

        def clone(layer):
            if layer.name in names:
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n)
            return layer
        wrapped = keras.models.clone_model(parent_model, clone_function=clone)
        from_parent.fine_tune(trainer, member, wrapped, self.member_epochs(config),
                              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = pruning.strip(wrapped)
        for name in sorted(names):
            kernel = stripped.get_layer(name).kernel.numpy()
            if not follows_pattern(kernel, m_by_n):
                raise errors.PruningError(
                    f"member {member.member_id}: layer {name} misses the {m_by_n[0]}:"
                    f"{m_by_n[1]} pattern after fine-tuning")
        return stripped

    def extra_fields(self, config, member, model, parent_row):
        return {"m_by_n": list(parse_m_by_n(config.m_by_n))}


methods.register(MByN())
