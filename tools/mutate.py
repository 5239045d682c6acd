"""Mutation testing of the installed package's modules with mutmut 3 (docs/mutation.md).

The wheel maps reference/, theory/ and validation/ into diffusion_oracle (setuptools
package-dir), and the tests import the installed package. mutmut derives a mutant's name from its
file's path (src/diffusion_oracle/reference/stats.py -> diffusion_oracle.reference.stats) and
switches mutants by the module name a function reports at run time, so the two must agree. This
script therefore builds, per module, a work directory laid out as the installed package:

    .mutate/<module>/src/diffusion_oracle/{..., reference/, theory/, validation/}
    .mutate/<module>/tests/            (a copy of tests/)
    .mutate/<module>/tools/            (a copy of tools/: some tests import its scripts)
    .mutate/<module>/pyproject.toml    (this repository's, with a [tool.mutmut] section)

and runs ``mutmut run`` there. mutmut copies src/ to mutants/src and puts that first on sys.path,
so ``import diffusion_oracle`` in the tests (and the pytest11 plugin) loads the mutated copy, not
the installed one (mutmut's own forced-fail run checks that the switch is live; ``--sanity`` runs
a hand-made mutant through the same layout without mutmut and requires the tests to fail).

Usage (``make mutate MODULES="reference/stats.py theory/derivations.py"``):

    python tools/mutate.py [--sanity] [--resume] [--only GLOB] [MODULE ...]

MODULE is a path from tools/mutate.toml (default: all of them). One process, one core
(--max-children 1; the Makefile runs it under nice). Results: .mutate/results/<module>.json
(counts and every mutant's status) and .mutate/results/<module>-survivors.diff (each surviving
mutant's diff, from ``mutmut show``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tools" / "mutate.toml"
WORK = ROOT / ".mutate"
# where each top-level source folder goes in the installed package (pyproject's package-dir)
LAYOUT = {
    "src/diffusion_oracle": "src/diffusion_oracle",
    "reference": "src/diffusion_oracle/reference",
    "theory": "src/diffusion_oracle/theory",
    "validation": "src/diffusion_oracle/validation",
}
# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code)
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          -11: "segfault", -9: "segfault", 37: "type check", None: "not checked"}  # fmt: skip


def installed_path(module: str) -> str:
    """reference/stats.py -> src/diffusion_oracle/reference/stats.py (the layout's path)."""
    for src, dest in LAYOUT.items():
        if module.startswith(src + "/"):
            return dest + module[len(src) :]
    raise SystemExit(f"module must lie under one of {sorted(LAYOUT)}, got {module!r}")


def slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", module.removesuffix(".py"))


def build_layout(work: Path, *, tests: bool = True) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for src, dest in LAYOUT.items():
        shutil.copytree(ROOT / src, work / dest, ignore=ignore)
    if tests:
        shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
        # some tests import the scripts that print docs/accuracy.md's tables (tools/*.py); mutmut
        # copies it on into mutants/ (also_copy below)
        shutil.copytree(ROOT / "tools", work / "tools", ignore=ignore)


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def write_config(work: Path, module: str, tests: list[str], opts: dict) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    text += (
        "\n[tool.mutmut]\n"
        f"source_paths = {toml_list(['src/diffusion_oracle'])}\n"
        f"only_mutate = {toml_list([installed_path(module)])}\n"
        f"pytest_add_cli_args = {toml_list(opts.get('pytest_args', []))}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        f"timeout_multiplier = {float(opts.get('timeout_multiplier', 15.0))}\n"
        f"timeout_constant = {float(opts.get('timeout_constant', 1.0))}\n"
        # mutmut runs the tests from mutants/, where it copies src/ and tests/ only; some tests
        # import tools/ (accuracy scripts) from the repository root next to tests/
        f"also_copy = {toml_list(['tools'])}\n"
        # torch is imported by the tests: fork the workers from a server process that imported
        # the test modules, not from the process that ran the suite (mutmut's advice for torch)
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(text)


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("HYPOTHESIS_PROFILE", "ci")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        e[var] = "1"  # one core
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def mutmut_exe() -> str:
    exe = Path(sys.executable).parent / "mutmut"
    if not exe.exists():
        raise SystemExit(f"mutmut is not installed next to {sys.executable} (pip install mutmut)")
    return str(exe)


def collect(work: Path, module: str, only: str | None = None) -> dict:
    meta = work / "mutants" / (installed_path(module) + ".meta")
    data = json.loads(meta.read_text())["exit_code_by_key"]
    if only:
        data = {k: v for k, v in data.items() if fnmatch.fnmatch(k, only)}
    status = {k: STATUS.get(v, "suspicious") for k, v in data.items()}
    counts = Counter(status.values())
    judged = counts["killed"] + counts["survived"] + counts["timeout"] + counts["no tests"]
    score = (counts["killed"] + counts["timeout"]) / judged if judged else float("nan")
    return {"module": module, "counts": dict(counts), "total": len(status), "score": score,
            "mutants": status}  # fmt: skip


def resume_names(work: Path, module: str, only: str | None = None) -> list[str]:
    """--resume: the same module under test, new tests (the rest of the layout stays as it
    was at the first run). Refresh the work directory's tests and config,
    drop mutmut's test-to-function map (new tests must be seen), and return the mutants that
    were not killed, which mutmut re-runs by name (killed ones keep their verdict: tests were
    only added or strengthened). Mutants never run (an earlier run with --only) are included
    only when ``only`` selects them: a plain --resume after an --only run re-runs that run's
    survivors, not the rest of the module."""
    copy = work / installed_path(module)
    if copy.read_bytes() != (ROOT / module).read_bytes():
        raise SystemExit(f"{module} changed since its run: run without --resume")
    shutil.rmtree(work / "tests")
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis")
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    res = collect(work, module)
    skip = ("killed", "timeout") if only else ("killed", "timeout", "not checked")
    return [k for k, v in res["mutants"].items() if v not in skip]


def run_module(module: str, cfg: dict, max_children: int, resume: bool = False,
               only: str | None = None) -> dict:  # fmt: skip
    tests = cfg["modules"][module]["tests"]
    work = WORK / slug(module)
    names = []
    if resume and (work / "mutants").exists():
        names = resume_names(work, module, only)
        if not names:
            print(f"== {module}: nothing left to re-run", flush=True)
    else:
        build_layout(work)
    write_config(work, module, tests, cfg.get("mutmut", {}))
    print(f"== {module}: {len(tests)} test target(s), work directory {work}"
          + (f", re-running {len(names)} mutants" if names else ""), flush=True)  # fmt: skip
    if only:
        names = [n for n in names if fnmatch.fnmatch(n, only)] if resume else [only]
    if names or not resume:
        subprocess.run([mutmut_exe(), "run", "--max-children", str(max_children), *names],
                       cwd=work, env=env(), check=True)  # fmt: skip
    res = collect(work, module, only)
    out = WORK / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{slug(module)}.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    diffs = []
    for name, st in sorted(res["mutants"].items()):
        if st != "killed" and st != "timeout":
            shown = subprocess.run([mutmut_exe(), "show", name], cwd=work, env=env(),
                                   capture_output=True, text=True).stdout  # fmt: skip
            diffs.append(f"### {name}: {st}\n{shown}")
    (out / f"{slug(module)}-survivors.diff").write_text("\n".join(diffs))
    c = res["counts"]
    print(f"== {module}: {c.get('killed', 0)} killed, {c.get('survived', 0)} survived, "
          f"{c.get('timeout', 0)} timeout, {c.get('no tests', 0)} no tests of {res['total']}: "
          f"{100 * res['score']:.1f}% killed", flush=True)  # fmt: skip
    return res


# a hand-made mutant: the NLL test made one-sided (an under-dispersed sampler then passes)
SANITY = (
    "reference/stats.py",
    "p = float(2 * sps.norm.sf(abs(z)))",
    "p = float(2 * sps.norm.sf(z))",
    "tests/test_mutation_kills_stats.py",
)


def sanity() -> None:
    """The layout really is what the tests import: with a hand-made mutant in the layout's copy
    (and PYTHONPATH at the layout) the targeted test fails; without it, it passes."""
    module, old, new, test = SANITY
    work = WORK / "sanity"
    build_layout(work, tests=False)
    path = work / installed_path(module)
    e = env()
    e["PYTHONPATH"] = str(work / "src")
    code = "import diffusion_oracle.reference.stats as m; print(m.__file__)"
    probe = [sys.executable, "-c", code]
    where = subprocess.run(probe, env=e, capture_output=True, text=True, check=True).stdout.strip()
    if Path(where).resolve() != path.resolve():
        raise SystemExit(f"sanity: the tests would import {where}, not the layout's {path}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), str(ROOT / test)]  # fmt: skip
    clean = subprocess.run(cmd, env=e, cwd=ROOT / "tests").returncode
    src = path.read_text()
    if old not in src:
        raise SystemExit(f"sanity: {old!r} not found in {module}")
    path.write_text(src.replace(old, new, 1))
    mutated = subprocess.run(cmd, env=e, cwd=ROOT / "tests").returncode
    print(f"sanity: imports {where}; clean run exit {clean}, hand-made mutant exit {mutated}")
    if clean != 0 or mutated == 0:
        raise SystemExit("sanity check failed: the mutant is not seen by the tests")
    print("sanity: the hand-made mutant is killed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("modules", nargs="*", help="paths from tools/mutate.toml (default: all)")
    ap.add_argument("--max-children", type=int, default=1)
    ap.add_argument("--sanity", action="store_true", help="run the hand-made mutant check first")
    ap.add_argument("--only", metavar="GLOB",
                    help="only the mutants whose names match, e.g. "
                    "'diffusion_oracle.testing.x_assert_log_likelihood_matches*'")  # fmt: skip
    ap.add_argument("--resume", action="store_true",
                    help="keep each module's last run and re-run only its surviving mutants "
                    "against the current tests (the source must be unchanged)")  # fmt: skip
    args = ap.parse_args(argv)
    with open(CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    modules = args.modules or list(cfg["modules"])
    unknown = [m for m in modules if m not in cfg["modules"]]
    if unknown:
        raise SystemExit(f"no tests mapped for {unknown} in {CONFIG.relative_to(ROOT)}")
    if args.sanity:
        sanity()
    results = [run_module(m, cfg, args.max_children, args.resume, args.only) for m in modules]
    print("\nmodule | killed | survived | timeout | no tests | total | killed %")
    for r in results:
        c = r["counts"]
        print(f"{r['module']} | {c.get('killed', 0)} | {c.get('survived', 0)} | "
              f"{c.get('timeout', 0)} | {c.get('no tests', 0)} | {r['total']} | "
              f"{100 * r['score']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
