r"""Train a population: every (sparsity x seed) member, dense and pruned.

  python -m save_checkpoint.train --workdir=W --dataset=mnist5k --model=small_cnn \
      --sparsities=0,0.5,0.9 --seeds=2

Sparsity 0 members (method `dense`) use the same recipe without pruning wrappers.
The others are pruned with `--method` (pie.compress.methods: during training, or
once from the finished dense member of the same seed, then fine-tuned); see
docs/training.md. `--protocol=from_dense` prunes every member from a parent
network instead, and `--init_from=PATH` starts from a saved Keras model
(pie.compress.lineage). Each finished member is a folder
`W/checkpoints/<method>/sparsity_<s>/seed_<k>/` and a row of `W/population.csv`
(see docs/contracts.md). Rerunning continues an interrupted member from its last
epoch checkpoint and skips finished ones.

This module holds the command line only: its flags are the fields of
pie.compress.config.TrainConfig, parsed once into a config, and the work is
pie.compress.trainer.train_population, imported (with TensorFlow) only once the
flags are checked: a refused flag or --help takes a fraction of a second.
"""
import inspect
import sys

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.compress import workers as worker_processes

if __name__ == "__main__":
    # The other workers of `--workers=N` start now, and load TensorFlow (about 4 s)
    # while this process checks the run and loads it; they begin once it has.
    worker_processes.start_early("save_checkpoint.train", sys.argv[1:])

from pie.compress.config import TrainConfig  # noqa: E402
from pie.io import cli  # noqa: E402

MODULE = "save_checkpoint.train"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    cli.define_flags_of(TrainConfig, flag_values, __name__)


def _trainer():
    """pie.compress.trainer, imported with TensorFlow once the flags are checked."""
    from pie.compress import trainer
    return trainer


def _train_population(config):
    return _trainer().train_population(config, MODULE)


def main(argv):
    del argv
    return _train_population(cli.config_from_flags(TrainConfig, flags.FLAGS))


def run(**settings):
    """Trains a population in this process: keyword arguments are TrainConfig's fields
    (the flags), e.g. run(workdir="W", seeds=2); bad input raises errors.InputError."""
    config = cli.make_config(TrainConfig, MODULE, settings)
    return cli.run_config(_train_population, config, MODULE)


run.__signature__ = inspect.signature(TrainConfig)


if __name__ == "__main__":
    define_flags()
    worker_processes.await_gate(load_first=_trainer)
    cli.run(main)
