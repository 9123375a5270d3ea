"""The whole book at the `smoke` profile: every notebook in the toc executes without error.

Opt-in (``SIMLIB_E2E=1 make test``): it runs every chapter, several minutes on 2 cores, and CI
executes the same notebooks at the larger `ci` profile right after the tests (.ci/run).
"""
import os

import nbformat
import pytest

from simlib import config
from simlib.publish import runner


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SIMLIB_E2E") != "1",
                    reason="end-to-end: set SIMLIB_E2E=1 (CI builds the ci book instead, .ci/run)")
def test_smoke_profile_executes_every_notebook(tmp_path):
    cfg = config.load("smoke")
    results = runner.execute(cfg, {}, out_dir=tmp_path, log=lambda *_: None)
    assert list(results) == runner.manifest()
    for name in results:
        nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name} holds an error output"
        glued = [o for c in nb.cells for o in c.get("outputs", [])
                 if any(k.startswith("application/papermill.record") for k in o.get("data", {}))]
        assert glued, f"{name} glues no number into the book"
