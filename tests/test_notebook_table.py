"""simlib.publish.notebook.table: the book's table format (integers as integers, 3 significant digits)."""
import numpy as np
import pandas as pd

from simlib.publish import notebook as nb
from simlib.publish.runner import reader_tags


def test_table_formats_integers_floats_and_missing_values():
    df = pd.DataFrame({"n": [3, 20000], "x": [0.123456, 12.3456], "f": [2.0, np.nan], "s": ["a", None]})
    html = nb.table(df).to_html()
    for shown in (">3<", ">20\u2009000<", ">0.123<", ">12.3<", ">2<", ">n/a<", ">a<"):
        assert shown in html
    assert "0.123456" not in html and "2.0<" not in html


def test_reader_tags_hide_code_but_keep_a_notebook_choice():
    assert reader_tags({"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}}) == \
        ["injected-parameters", "hide-cell"]
    assert reader_tags({"cell_type": "code", "metadata": {"tags": ["show-input"]}}) == ["show-input"]
    assert reader_tags({"cell_type": "markdown", "metadata": {}}) == []
    assert "hide-input" in reader_tags({"cell_type": "code", "metadata": {"mystnb": {}}})
