"""CSV text written column by column (pie.io.csv_text) reads back as pandas' own."""
import io

import numpy as np
import pandas as pd
import pytest

from pie.io import csv_text


def written(frame):
    handle = io.BytesIO()
    csv_text.write(frame, handle)
    return handle.getvalue()


def varied_frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    floats = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 300, n)
    floats[:11] = [0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, 1e15, 1e16, 100.0, 5e-324, 1e-5]
    return pd.DataFrame({
        "f64": floats,
        "f32": (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32),
        "integral": rng.integers(0, 5, n).astype(np.float64),
        "all_nan": np.full(n, np.nan),
        "i64": rng.integers(-10**12, 10**12, n),
        "i32": rng.integers(0, 1000, n).astype(np.int32),
        "flag": rng.random(n) < 0.5,
        "text": rng.choice(["plain", "a,b", 'say "hi"', "line\nbreak", "", None], n),
        "category": pd.Categorical(rng.choice(["p", "q,r"], n)),
        "nullable": pd.array(np.where(rng.random(n) < 0.3, None, 5), dtype="Int64"),
        'odd, "name"': 1,
    })


def test_reads_back_as_the_text_pandas_writes():
    frame = varied_frame()
    ours = pd.read_csv(io.BytesIO(written(frame)))
    theirs = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(ours, theirs)  # values and inferred dtypes
    assert ours["integral"].dtype == np.float64  # "3.0", not "3"
    np.testing.assert_array_equal(ours["f64"].to_numpy(), frame["f64"].to_numpy())


def test_exact_text():
    frame = pd.DataFrame({"name": ["plain", "a,b", 'say "hi"', None],
                          "x": [0.0, 1.5, np.nan, -2.0], "n": [1, 2, 3, 4],
                          "flag": [True, False, True, False]})
    assert written(frame).decode() == (
        'name,x,n,flag\nplain,0.0,1,True\n"a,b",1.5,2,False\n'
        '"say ""hi""",,3,True\n,-2.0,4,False\n')
    assert written(frame) == frame.to_csv(index=False).encode()


def test_a_carriage_return_is_quoted():
    # pandas' own writer leaves it bare, and its reader then splits the row.
    frame = pd.DataFrame({"text": ["x\ry", "z"], "n": [1, 2]})
    assert written(frame) == b'text,n\n"x\ry",1\nz,2\n'
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(written(frame))), frame)


def test_written_in_slices_gives_the_same_text(monkeypatch):
    frame = varied_frame(n=1000, seed=1)
    whole = written(frame)
    monkeypatch.setattr(csv_text, "ROWS_PER_SLICE", 7)
    assert written(frame) == whole


@pytest.mark.parametrize("column", [
    [0.5, np.nan, 0.25], ["a", None, ""], pd.array([1, None], dtype="Int64"),
    pd.array([True, None], dtype="boolean")])
def test_a_single_column_keeps_its_rows_without_a_value(column):
    frame = pd.DataFrame({"only": column})
    text = written(frame)
    assert text == frame.to_csv(index=False).encode()
    assert len(pd.read_csv(io.BytesIO(text))) == len(frame)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"mixed": [1, "a", 2.5], "n": [1, 2, 3]}),  # mixed Python objects
    pd.DataFrame({"huge": pd.Series([2**70, 1], dtype=object), "n": [1, 2]}),
    pd.DataFrame({"half": np.array([0.1, 2.5], np.float16)}),
    pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")])),
    pd.DataFrame({None: [1.5], "n": [1]}),
    pd.DataFrame({"when": pd.to_datetime(["2026-01-01", "2026-06-30"])}),
    pd.DataFrame(),
    pd.DataFrame({"a": [], "b": []}),
])
def test_kinds_not_handled_are_written_by_pandas(frame):
    assert written(frame) == frame.to_csv(index=False, lineterminator="\n").encode()
