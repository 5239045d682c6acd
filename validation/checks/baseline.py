"""The known-deviation baseline (issue 21): a checked-in file of the deviations the catalogue has
found, each with its diagnosis and, where one is open, the upstream issue, so that a user's CI
fails only on *new* deviations (``diffusion-oracle conformance --baseline FILE``; the file is
rewritten from a run with ``--update-baseline``).

File format (JSON): ``{"library": "diffusers", "version": "0.42.1", "deviations": {case label:
{check name: {"detail": the report's diagnosis, "upstream": "diffusers#12771" or null}}}}``.
A row is a deviation where its check FAILed; the comparison is by case label and check name
(the part before " ("), so a changed number in the diagnosis is still the known deviation.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_BASELINE", "UPSTREAM", "compare", "from_rows", "load", "save"]

DEFAULT_BASELINE = Path(__file__).resolve().parent.parent / "baselines" / "diffusers.json"

# upstream issues open against the release the baseline was written on
UPSTREAM = {
    ("DPMSolverMultistepScheduler(beta_schedule=squaredcos_cap_v2, use_karras_sigmas=True)",
     "as shipped"): "huggingface/diffusers#12771",
    ("FlowMatchEulerDiscreteScheduler(shift=3.0)", "documented grid"):
        "huggingface/diffusers#13243",
}  # fmt: skip


def _key(name: str) -> str:
    return name.split(" (")[0]


def _label(case) -> str:
    return case.label if hasattr(case, "label") else str(case)


def from_rows(rows, library: str, version: str) -> dict:
    """The baseline of a report's rows (``conformance_report``'s second value): every FAILed
    check with its diagnosis and the upstream issue where :data:`UPSTREAM` knows one."""
    dev = {}
    for case, res in rows:
        for c in res:
            if c.passed is False:
                lab, key = _label(case), _key(c.name)
                dev.setdefault(lab, {})[key] = {
                    "detail": c.detail[:400], "upstream": UPSTREAM.get((lab, key)),
                }  # fmt: skip
    return {"library": library, "version": version, "deviations": dev}


def save(baseline: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
    return path


def load(path) -> dict:
    """The baseline in ``path`` (ValueError naming the file when it is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"baseline {path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("deviations"), dict):
        raise ValueError(f"baseline {path} has no 'deviations' object")
    return data


def compare(rows, baseline: dict) -> dict:
    """{"new": [(case, check, detail)], "known": [(case, check, upstream)], "fixed": [(case,
    check)]}: FAILs the baseline does not list, FAILs it lists, and listed deviations whose
    check ran and did not FAIL (the baseline can be updated)."""
    dev = baseline.get("deviations", {})
    out = {"new": [], "known": [], "fixed": []}
    for case, res in rows:
        lab = _label(case)
        listed = dev.get(lab, {})
        for c in res:
            key = _key(c.name)
            if c.passed is False:
                if key in listed:
                    out["known"].append((lab, key, listed[key].get("upstream")))
                else:
                    out["new"].append((lab, key, c.detail))
            elif key in listed and c.passed is True:
                out["fixed"].append((lab, key))
    return out
