"""Every notebook in notebooks/ runs top to bottom in a fresh kernel; a failing cell (each
notebook asserts its numeric checks against the reference) fails the suite."""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell; each notebook takes 5-15 s on 2 cores


def test_there_is_one_notebook_per_topic():
    names = [p.stem for p in NOTEBOOKS]
    for topic in ("forward", "posterior", "elbo", "score", "samplers", "guidance"):
        assert any(topic in n for n in names), (topic, names)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell on the first failure
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
