"""`--shard=i/n`: one of n processes, on as many machines, sharing one workdir.

Member i of a list (the population in training order, the manifest in member_id
order, a stage's conversions) goes to shard i mod n (`select`), in training and in
every per-member evaluation stage, so n shards together do each member once.

Stages whose outputs are per-member files (predictions, corruptions, quantize)
need nothing more: each file is written atomically and stamps are updated under
their folder's lock (records.record_written). Stages whose output is one table over
all members (cost, noise_similarity, informative_features) write their members'
rows as parts, `<folder>/.parts/<stage>/<i>-of-<n>.<table>.parquet` and
`<i>-of-<n>.json` (the run's key: options and input files, written last), under
the lock of `<folder>`; the shard that adds the last part of the set (every
i of n, one key) reads them all and writes the tables, still under that lock, then
removes the parts (`gathered`). Parquet keeps every value and type as computed,
so the tables equal an unsharded run's (docs/contracts.md).
"""
import contextlib
import json
import os

from absl import flags

from pie.io import cli, errors, journal, records, safe_paths

FLAG = "shard"
UNSHARDED = (0, 1)
PARTS_DIR = ".parts"
# A part's tables are read whole: at most this many bytes each (a million rows of
# per-image results is about 100 MB).
MAX_PART_BYTES = 1 << 30


def define_flag(flag_values=flags.FLAGS):
    """The --shard flag of a per-member stage."""
    flags.DEFINE_string(FLAG, "0/1", "i/n: run only members i, i+n, i+2n, ... (as training's "
                        "--shard divides them); n shards may run at once in one workdir.",
                        flag_values=flag_values)


def parse(text):
    """(i, n) of a --shard value."""
    return cli.parse_slice(text, FLAG)


def select(items, shard):
    """The items of shard (i, n): those at positions i, i+n, i+2n, ..."""
    index, count = shard
    return [item for position, item in enumerate(items) if position % count == index]


def count(total, shard):
    """How many of `total` items `select` gives shard (i, n)."""
    return len(range(shard[0], total, shard[1]))


def describe(shard):
    """' in shard i/n' for progress lines ('' unsharded)."""
    return "" if shard == UNSHARDED else f" in shard {shard[0]}/{shard[1]}"


def kept_line(stage, shard, path):
    """What a shard that does not complete the set prints: its rows wait in a part."""
    return (f"{stage}: rows of shard {shard[0]}/{shard[1]} kept; the last shard to finish "
            f"writes {path}")


def flags_text(text):
    """A stage's flags text without --shard: the flags file is one for every shard,
    and the shard changes no result."""
    return "".join(line + "\n" for line in text.splitlines()
                   if line and not line.startswith(f"--{FLAG}="))


def concat(frames, columns):
    """One frame of `frames` (a shard's per-eps rows, or every shard's part), in
    order; empty ones are left out, so they change no column's type."""
    import pandas as pd
    full = [frame for frame in frames if len(frame)]
    if not full:
        return pd.DataFrame(columns=columns)
    return pd.concat(full, ignore_index=True)


def _name(shard):
    return f"{shard[0]}-of-{shard[1]}"


def _key_text(key):
    return json.dumps(key, sort_keys=True) + "\n"


def _write_part(folder, shard, key, tables):
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name, frame in tables.items():
        path = os.path.join(folder, f"{_name(shard)}.{name}.parquet")
        with records.atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    records.write_text(os.path.join(folder, f"{_name(shard)}.json"), _key_text(key))


def _read_table(path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    safe_paths.checked(path, "file")
    try:
        if os.path.getsize(path) > MAX_PART_BYTES:
            raise errors.ContractError(f"{path} is larger than {MAX_PART_BYTES} bytes")
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as error:
        raise errors.ContractError(f"{path} is not a readable part: {error}; remove it and "
                                   "rerun that shard")


def _complete(folder, count, key, names):
    """Every shard's tables ({name: [frame per shard]}), or None while a part of this
    run (this key) is missing."""
    text = _key_text(key)
    for index in range(count):
        path = os.path.join(folder, f"{_name((index, count))}.json")
        if not os.path.isfile(path):
            return None
        with safe_paths.open_regular(path, encoding="utf-8") as handle:
            if handle.read(len(text) + 1) != text:
                return None  # a part of another run (other options or inputs)
    return {name: [_read_table(os.path.join(folder, f"{_name((index, count))}.{name}.parquet"))
                   for index in range(count)] for name in names}


@contextlib.contextmanager
def gathered(out_dir, stage, shard, key, tables):
    """Yields every shard's `tables` ({name: [frame of shard 0, 1, ...]}) once this
    shard's are added and the set is complete, else None (another shard finishes).

    Unsharded, yields this run's tables as they are. Sharded, the block runs under
    the lock of `out_dir` (write the outputs there); the parts are removed after it.
    `key` (JSON: options, input files) tells this run's parts from a stale run's.
    """
    if shard == UNSHARDED:
        yield {name: [frame] for name, frame in tables.items()}
        return
    folder = os.path.join(out_dir, PARTS_DIR, stage)
    journal.makedirs(folder)
    with records.locked(out_dir, folder=True):
        _write_part(folder, shard, key, tables)
        complete = _complete(folder, shard[1], key, list(tables))
        yield complete
        if complete is not None:
            for index in range(shard[1]):
                name = _name((index, shard[1]))
                for path in [f"{name}.{table}.parquet" for table in tables] + [f"{name}.json"]:
                    journal.remove(os.path.join(folder, path))
