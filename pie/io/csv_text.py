"""The CSV text of a frame, column by column with pyarrow, read back as pandas' own.

Why not `DataFrame.to_csv`: it formats every float in Python; the 250,000 x 15
`pie.csv` of an ImageNet-sized study takes it about 2 s, this 0.4 s. Why not
`pyarrow.csv.write_csv`: it quotes every string, writes booleans as `true`, NaN as
`nan` and integral floats without a decimal point, so pandas would read those
columns back as integers.

Here each column becomes text with pyarrow's compute functions: floats in their
shortest round-trip form (the digits `repr` gives; `1e-05` may read `0.00001`),
`.0` after integral ones, NaN and missing values empty, booleans `True` / `False`,
text quoted only when it holds a comma, a quote or a line break (quotes doubled),
as pandas does. Rows are then joined and written in slices, so memory stays
bounded. A column of a kind this does not handle (mixed Python objects, Python
ints beyond int64, dates, float16) or column names of several levels or missing
send the whole frame to `DataFrame.to_csv`.

Spreadsheet-safe: a text value (of a string column, or a column name) that a
spreadsheet would take for a formula, one starting with `=`, `+`, `-`, `@`, a tab or
a carriage return (OWASP's CSV-injection list), is written with a single quote
before it (`'=HYPERLINK(...)`), as is one that starts with quotes and then one of
those; numbers are never touched (`-0.5` in a float column stays `-0.5`).
`unguard` takes the quote off again: readers get the original text back.
"""
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROWS_PER_SLICE = 200_000
_TEXT = pa.large_string()
_NEEDS_QUOTES = r'[",\r\n]'
_INTEGRAL = r"^-?[0-9]+$"
# Text a spreadsheet would evaluate (after any quotes a guard put there already).
GUARD = "'"
_FORMULA = r"^'*[=+\-@\t\r]"
_GUARDED = r"^'+[=+\-@\t\r]"


def _text(value):
    return pa.scalar(value, _TEXT)


def _quoted(text):
    """`text` with the values that need it quoted, their quotes doubled."""
    escaped = pc.binary_join_element_wise(
        _text('"'), pc.replace_substring(text, '"', '""'), _text('"'), _text(""))
    return pc.if_else(pc.match_substring_regex(text, _NEEDS_QUOTES), escaped, text)


def _handled(kind):
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    # float16: pyarrow would write its exact binary value (0.0999755859375 for 0.1).
    return ((pa.types.is_floating(kind) and not pa.types.is_float16(kind))
            or pa.types.is_boolean(kind)
            or pa.types.is_integer(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind) or pa.types.is_null(kind))


def _column_text(array):
    """One column (of a `_handled` type) as text, missing values empty."""
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    kind = array.type
    if pa.types.is_floating(kind):
        text = pc.cast(array, _TEXT)
        text = pc.if_else(pc.match_substring_regex(text, _INTEGRAL),
                          pc.binary_join_element_wise(text, _text(".0"), _text("")), text)
        text = pc.if_else(pc.is_nan(array), _text(None), text)
    elif pa.types.is_boolean(kind):
        text = pc.if_else(array, "True", "False").cast(_TEXT)
    elif pa.types.is_null(kind):
        text = pa.nulls(len(array), _TEXT)
    elif pa.types.is_integer(kind):
        text = pc.cast(array, _TEXT)
    else:
        text = _quoted(_guarded(pc.cast(array, _TEXT)))
    return pc.fill_null(text, _text(""))


def _guarded(text):
    """String values a spreadsheet would evaluate, with GUARD before them."""
    risky = pc.match_substring_regex(text, _FORMULA)
    return pc.if_else(risky, pc.binary_join_element_wise(_text(GUARD), text, _text("")), text)


def guard_value(value):
    """One value as written: GUARD before text a spreadsheet would evaluate."""
    if isinstance(value, str) and re.match(_FORMULA, value):
        return GUARD + value
    return value


def unguard_value(value):
    """The text `guard_value` was given (other values unchanged)."""
    if isinstance(value, str) and re.match(_GUARDED, value):
        return value[len(GUARD):]
    return value


def unguard(frame):
    """`frame` (read from a CSV written here) with the guards of its text values and
    column names taken off: the text that was written. Numbers are untouched."""
    renamed = {name: unguard_value(name) for name in frame.columns
               if isinstance(name, str) and name.startswith(GUARD)}
    if renamed:
        frame = frame.rename(columns=renamed)
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object and not isinstance(column.dtype, pd.StringDtype):
            continue
        try:  # (a cheap first look: 9 million member ids take 0.4 s)
            marked = column.str.startswith(GUARD, na=False)
        except AttributeError:  # no text in the column at all
            continue
        if marked.any():
            marked[marked] = column[marked].str.match(_GUARDED, na=False)
            values = column.astype(object)
            values[marked] = values[marked].map(unguard_value)
            frame[name] = values.astype(column.dtype)
    return frame


def _header(columns):
    names = pa.array([str(name) for name in columns], _TEXT)
    return (",".join(_quoted(_guarded(names)).to_pylist()) + "\n").encode()


def _rows(table):
    """The rows of `table` as bytes, each ending in a newline."""
    pieces = []
    for column in table.columns:
        text = _column_text(column.combine_chunks())
        if table.num_columns == 1:  # an empty line would be skipped when read: quote it
            text = pc.if_else(pc.equal(text, _text("")), _text('""'), text)
        pieces += [text, _text(",")]
    pieces[-1] = _text("\n")
    rows = pc.binary_join_element_wise(*pieces, _text(""))
    # The rows' characters lie one after another in the data buffer.
    offsets = np.frombuffer(rows.buffers()[1], np.int64)[rows.offset:rows.offset + len(rows) + 1]
    return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]


def _table(frame):
    """`frame` as a pyarrow Table, or None when a column is of a kind not handled."""
    if (len(frame.columns) == 0 or not frame.columns.is_unique
            or not all(isinstance(name, (str, int)) for name in frame.columns)):
        return None  # (names of several levels, or missing, as pandas writes them)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed objects,
        return None                                                    # huge Python ints
    return table if all(_handled(column.type) for column in table.columns) else None


def write(frame, handle):
    """Writes `frame` (no index) to the binary file `handle` as CSV text."""
    table = _table(frame)
    if table is None:
        guarded = frame.copy()
        for position in range(guarded.shape[1]):
            kind = guarded.dtypes.iloc[position]
            if kind == object or isinstance(kind, pd.StringDtype):
                guarded.isetitem(position, guarded.iloc[:, position].map(guard_value))
        if not isinstance(guarded.columns, pd.MultiIndex):
            guarded.columns = [guard_value(name) for name in guarded.columns]
        handle.write(guarded.to_csv(index=False, lineterminator="\n").encode())
        return
    handle.write(_header(frame.columns))
    for start in range(0, table.num_rows, ROWS_PER_SLICE):
        handle.write(_rows(table.slice(start, ROWS_PER_SLICE)))
