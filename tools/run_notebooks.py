"""Re-execute the notebooks in place so their stored outputs match the code (`make notebooks`).
The test suite executes them separately (tests/test_notebooks.py) and never writes them."""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

root = Path(__file__).resolve().parents[1] / "notebooks"
for path in sorted(root.glob("*.ipynb")) if len(sys.argv) < 2 else map(Path, sys.argv[1:]):
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    nbformat.write(nb, path)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
