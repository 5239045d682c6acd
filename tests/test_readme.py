"""The README's Python examples run as written (blocks that import an optional library run
where it is installed: diffusers comes with the validation extra)."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
OPTIONAL = ("diffusers", "k_diffusion")


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, tmp_path, monkeypatch):
    for mod in OPTIONAL:
        if re.search(
            rf"^\s*(from|import) {mod}\b", code, flags=re.M
        ) and not importlib.util.find_spec(mod):
            pytest.skip(f"{mod} is not installed (optional 'validation' extra)")
    if "load_sampling" in code and not all(
        importlib.util.find_spec(m) for m in ("k_diffusion", "torchsde")
    ):
        pytest.skip("k-diffusion or torchsde is not installed (optional 'validation' extra)")
    monkeypatch.chdir(tmp_path)  # plots land in a temporary folder
    exec(compile(code, str(README), "exec"), {})
