"""Version drift (issue 21): the pipeline-faithful driver reads older diffusers APIs correctly
(0.21.4: no set_begin_index, the multistep solvers' ``sigmas`` is the training table; 0.27.2:
step_index and begin index). Each release is installed into a throwaway folder (with the
huggingface_hub it was released against) and tests/drift_probe.py runs in a subprocess on it.
Marked ``drift`` (network access to the package index, a few minutes): ``make test-drift``;
``make test`` leaves it out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.drift

RELEASES = {"0.21.4": "0.20.3", "0.27.2": "0.20.3"}  # diffusers: huggingface_hub
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("DIFFUSION_ORACLE_DRIFT_CACHE",
                            Path.home() / ".cache" / "diffusion-oracle" / "drift"))  # fmt: skip


def _install(version: str) -> Path:
    target = CACHE / f"diffusers-{version}"
    if not (target / "diffusers").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for req in (f"diffusers=={version}", f"huggingface_hub=={RELEASES[version]}"):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--target", str(target), req], check=True)  # fmt: skip
    return target


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_the_driver_reads_an_older_release(version):
    target = _install(version)
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, str(HERE / "drift_probe.py")], env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(rows) == 9, out.stderr[-2000:]
    for r in rows:
        assert r["version"] == version
        assert "error" not in r, r
        assert r["runs"] == "PASS" and r["labels"] == "PASS", r
        assert r["shipped"] is True and r["img2img"] is True, r
