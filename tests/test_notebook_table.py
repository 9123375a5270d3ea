"""The book's one table format (simlib.publish.tables via notebook.table): decimals per column kind,
intervals as one "[lo, hi]" column, a dash and a note for missing values."""
import numpy as np
import pandas as pd

from simlib.publish import notebook as nb
from simlib.publish import tables
from simlib.publish.runner import reader_tags


def _cells(styler) -> pd.DataFrame:
    """The displayed text of every body cell."""
    ctx = styler._translate(False, False)  # the Styler's own rendering model, as to_html uses it
    return pd.DataFrame([[c["display_value"] for c in row if c["type"] == "td"] for row in ctx["body"]],
                        columns=styler.data.columns)


def test_columns_share_decimals_chosen_by_their_kind():
    df = pd.DataFrame({"posts": [3, 20000], "mean": [0.00618, -0.0373], "delta": [0.0648, -0.0705],
                       "p": [0.0004, 0.2], "big": [1234.5, 20345.2], "ok": [True, False], "s": ["a", "b"]})
    shown = _cells(nb.table(df))
    assert shown["posts"].tolist() == ["3", "20\u2009000"]
    assert shown["mean"].tolist() == ["0.0062", "-0.0373"]  # one column, one number of decimals
    assert shown["delta"].tolist() == ["+0.0648", "-0.0705"]  # changes carry their sign
    assert shown["p"].tolist() == ["<0.001", "0.200"]
    assert shown["big"].tolist() == ["1\u2009234", "20\u2009345"]
    assert shown["ok"].tolist() == ["yes", "no"] and shown["s"].tolist() == ["a", "b"]


def test_an_interval_is_one_column_in_place_of_its_ends():
    df = pd.DataFrame({"delta": [0.01234, -0.002], "lo": [-0.0051, -0.0123], "hi": [0.0301, 0.0088],
                       "mde": [0.04, 0.05], "gain_lo": [0.1, np.nan], "gain_hi": [0.3, np.nan]})
    shown = _cells(nb.table(df))
    assert list(shown.columns) == ["delta", "95% CI", "mde", "gain 95% CI"]
    assert shown["95% CI"].tolist() == ["[-0.0051, +0.0301]", "[-0.0123, +0.0088]"]  # signed as its estimate
    assert shown["gain 95% CI"].tolist()[1] == tables.DASH


def test_missing_values_are_a_dash_with_a_note_saying_why():
    df = pd.DataFrame({"entropy_bits": [1.52, np.nan]}, index=["real", "plain"])
    html = nb.table(df, missing="plain gave no verdict to count").to_html()
    assert "nan" not in html.lower() and ">\u2013<" in html
    assert "plain gave no verdict to count" in html
    generic = nb.table(df).to_html()
    assert tables.MISSING_NOTE in generic
    assert "caption" not in nb.table(df.fillna(1.0)).to_html()  # no note without a missing value


def test_series_multiindex_and_wide_tables_render():
    s = pd.Series([0.5, np.nan], index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]), name="share")
    assert ">\u2013<" in nb.table(s).to_html()
    wide = pd.concat({"stance": pd.DataFrame({"NTA": [0.25]}), "register": pd.DataFrame({"vent": [0.5]})}, axis=1)
    html = nb.table(wide).to_html()
    assert 'class="simlib-table"' in html and "0.250" in html


def test_reader_tags_hide_code_but_keep_a_notebook_choice():
    assert reader_tags({"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}}) == \
        ["injected-parameters", "hide-cell"]
    assert reader_tags({"cell_type": "code", "metadata": {"tags": ["show-input"]}}) == ["show-input"]
    assert reader_tags({"cell_type": "markdown", "metadata": {}}) == []
    assert "hide-input" in reader_tags({"cell_type": "code", "metadata": {"mystnb": {}}})


def test_estimate_grid_gives_each_measure_its_decimals_and_dashes_undefined_ones():
    long = pd.DataFrame({"measure": ["entropy", "entropy", "repetition", "repetition"],
                         "source": ["real", "plain"] * 2, "mean": [1.523, np.nan, 0.41234, 0.5],
                         "lo": [1.2, np.nan, 0.4, 0.45], "hi": [1.8, np.nan, 0.43, 0.55]})
    grid = nb.estimates(long, "measure", "source")
    assert grid.loc["entropy", "real"] == "1.52 [1.20, 1.80]"
    assert grid.loc["entropy", "plain"] == tables.DASH
    assert grid.loc["repetition", "real"] == "0.412 [0.400, 0.430]"


def test_prose_columns_wrap_and_values_do_not():
    df = pd.DataFrame({"effect": [0.1234], "rule": ["effect = mean over probe posts x seeds of a paired change; " * 2]},
                      index=["finding"])
    html = tables.styled(df).to_html()
    assert "white-space: normal" in html
    short = tables.styled(pd.DataFrame({"effect": [0.1234], "rule": ["CI > 0"]}, index=["finding"])).to_html()
    assert "white-space: normal" not in short
