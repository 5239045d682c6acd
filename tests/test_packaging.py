"""Packaging: the wheel holds every .py of the mapped folders; the reference and theory import
without torch; the CLI runs; the installed package (not the source tree) is what is tested."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {
    "src/diffusion_oracle": "diffusion_oracle",
    "theory": "diffusion_oracle/theory",
    "reference": "diffusion_oracle/reference",
    "validation": "diffusion_oracle/validation",
}


@pytest.mark.slow
def test_wheel_contains_every_python_file(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("diffusion_oracle-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for src, dest in MAPPING.items():
        for f in (ROOT / src).rglob("*.py"):
            if "__pycache__" not in f.parts:
                expected.add(f"{dest}/{f.relative_to(ROOT / src).as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"files left out of the wheel (list the package in pyproject): {missing}"
    assert "diffusion_oracle/py.typed" in names


def test_installed_package_is_tested():
    import diffusion_oracle

    path = Path(diffusion_oracle.__file__).resolve()
    if os.environ.get("CI"):
        assert ROOT / "src" not in path.parents, f"CI must test the installed build, got {path}"
    assert diffusion_oracle.reference.__name__ == "diffusion_oracle.reference"


def test_reference_and_theory_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import diffusion_oracle, diffusion_oracle.reference, diffusion_oracle.theory\n"
        "import diffusion_oracle.testing\n"
        "from diffusion_oracle.reference import ring8, VPLinear, ExactModel\n"
        "ExactModel(ring8(), VPLinear())(__import__('numpy').zeros((1, 2)), 0.5)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_cli_help_and_ground_truth(tmp_path):
    exe = [sys.executable, "-m", "diffusion_oracle"]
    out = subprocess.run([*exe, "--help"], check=True, capture_output=True, text=True).stdout
    assert "ground-truth" in out and "schedules" in out and "targets" in out
    res = subprocess.run(
        [
            *exe,
            "ground-truth",
            "--target",
            "bimodal1d",
            "--schedule",
            "ddpm-cosine",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "log_snr" in res.stdout and "nan" not in res.stdout.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ground_truth_bimodal1d_ddpm-cosine.png",
        "schedule_ddpm-cosine.png",
    ]
    bad = subprocess.run([*exe, "ground-truth", "--times", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--times must be numbers in [0, 1]" in bad.stderr
    lst = subprocess.run([*exe, "schedules"], check=True, capture_output=True, text=True).stdout
    assert "vp-cosine" in lst and "ddpm-linear-zero-snr" in lst
