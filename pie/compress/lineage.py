"""Where each population member starts: a fresh network, or a parent network it prunes.

Two protocols (`save_checkpoint.train --protocol`):

  scratch     every member trains from a fresh initialisation, and magnitude and wt
              prune during that training (Hooker et al.). sipp and the unit criteria
              prune a finished network: they start from the finished dense member of
              their seed when the workdir has one (else they train that network first).
  from_dense  each seed's dense member trains first; every pruned member loads its
              parent network, prunes it once (each layer by |w| for magnitude, one
              global ranking for wt and sipp, units for the criteria) and retrains
              for --finetune_epochs with the removed weights held at 0 (Liebenwein et
              al., Lost in Pruning).

and two prune schedules for members that have a parent (`--prune_schedule`):

  oneshot     the parent of every pruned member is the dense member of its seed.
  iterative   the sparsities are taken in ascending order and each pruned member's
              parent is the member of the next lower sparsity, same method and seed
              (the dense member for the lowest): Lost in Pruning's "cascade".

`--init_from=PATH` (one `.keras` file, or one per seed with `{seed}` in PATH) makes
that model the start of each seed: the dense member is the model itself (trained
further only for --epochs > 0), and pruned members prune from it as from_dense does
(from the dense member when sparsity 0 is in the population, else from the file).
"""
import dataclasses
from typing import Optional

from pie.io import errors, records

PROTOCOLS = ("scratch", "from_dense")
PRUNE_SCHEDULES = ("oneshot", "iterative")
SEED_FIELD = "{seed}"


@dataclasses.dataclass(frozen=True)
class Parent:
    """The network a member starts from: another member, or a model file (--init_from)."""
    member_id: Optional[str] = None
    path: Optional[str] = None


def init_path(pattern, seed):
    """The --init_from file of one seed."""
    return pattern.replace(SEED_FIELD, str(seed))


def validate(protocol, prune_schedule, sparsities, init_from):
    """One UsageError naming the bad choice and what is allowed."""
    if protocol not in PROTOCOLS:
        raise errors.UsageError(f"unknown --protocol '{protocol}'; allowed: "
                                f"{', '.join(PROTOCOLS)}")
    if prune_schedule not in PRUNE_SCHEDULES:
        raise errors.UsageError(f"unknown --prune_schedule '{prune_schedule}'; allowed: "
                                f"{', '.join(PRUNE_SCHEDULES)}")
    if protocol == "from_dense" and not init_from and 0 not in sparsities:
        raise errors.UsageError(
            "--protocol=from_dense prunes each seed's dense member: --sparsities must "
            "include 0 (or give --init_from=PATH, the networks to prune)")
    if prune_schedule == "iterative" and protocol == "scratch" and not init_from:
        raise errors.UsageError(
            "--prune_schedule=iterative steps each pruned member from the previous one: "
            "use it with --protocol=from_dense or --init_from")


def has_parents(protocol, init_from):
    """Whether every member of the population starts from a parent network."""
    return protocol == "from_dense" or bool(init_from)


def parents(sparsities, seeds, method, protocol, prune_schedule, init_from):
    """{member_id: Parent or None} for the whole population (every shard).

    None: the member starts fresh (or, under scratch, the one-shot methods' own
    lookup of the dense member applies).
    """
    result = {}
    pruned = sorted(s for s in sparsities if s > 0)
    for seed in range(seeds):
        dense_id = f"{records.variant_key(records.DENSE_METHOD, 0.0)}_seed{seed}"
        init = Parent(path=init_path(init_from, seed)) if init_from else None
        if 0 in sparsities:
            result[dense_id] = init
        if not has_parents(protocol, init_from):
            result.update({f"{records.variant_key(method, s)}_seed{seed}": None
                           for s in pruned})
            continue
        first = Parent(member_id=dense_id) if 0 in sparsities else init
        previous = first
        for sparsity in pruned:
            member_id = f"{records.variant_key(method, sparsity)}_seed{seed}"
            result[member_id] = previous if prune_schedule == "iterative" else first
            previous = Parent(member_id=member_id)
    return result


def training_order(sparsities, protocol, init_from):
    """Sparsities in the order members train: parents before their children."""
    if has_parents(protocol, init_from):
        return sorted(sparsities)
    return list(sparsities)
