"""The known-deviation baseline (issue 21): a checked-in file of the deviations the catalogue has
found, each with its diagnosis and, where one is open, the upstream issue, so that a user's CI
fails only on *new* deviations (``diffusion-oracle conformance --baseline FILE``; the file is
rewritten from a run with ``--update-baseline``).

File format (JSON): ``{"library": "diffusers", "version": "0.42.1", "deviations": {case label:
{check name: {"detail": the report's diagnosis, "upstream": "diffusers#12771" or null}}}}``.
A row is a deviation where its check FAILed; the comparison is by case label, check name (the
part before " (") and, for the as-shipped check, the fingerprint of its findings (kind and N),
so a changed number in a diagnosis is still the known deviation but a crash at new N is new; a
check that raised is never known.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_BASELINE", "UPSTREAM", "compare", "fingerprint", "from_rows", "load", "save"]

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


def fingerprint(c) -> dict | None:
    """What identifies a deviation beyond its check's name: for the as-shipped check, the kind
    of each finding and the N it was found at (float32), so that a new crash at other N is a
    new deviation; None for the other checks (matched by name)."""
    f32 = (c.data or {}).get("float32")
    if not isinstance(f32, dict):
        return None
    return {k: sorted(int(n) for n, _ in f32.get(k, []))
            for k in ("crash", "non_finite", "repeated", "calls")}  # fmt: skip


def _raised(c) -> bool:
    return str(c.detail).startswith("the check raised")


def from_rows(rows, library: str, version: str, previous: dict | None = None) -> dict:
    """The baseline of a report's rows (``conformance_report``'s second value): every FAILed
    check with its diagnosis, its :func:`fingerprint` and the upstream issue where
    :data:`UPSTREAM` knows one; a check that raised is never recorded. With ``previous``, the
    entries of the cases and checks this run did not judge are kept (a partial run updates only
    its own)."""
    dev = {lab: dict(v) for lab, v in (previous or {}).get("deviations", {}).items()}
    for case, res in rows:
        lab = _label(case)
        entries = dev.setdefault(lab, {})
        for c in res:  # the checks this run judged replace their entries; the others stay
            entries.pop(_key(c.name), None)
        for c in res:
            if c.passed is False and not _raised(c):
                key = _key(c.name)
                entries[key] = {
                    "detail": c.detail[:400], "upstream": UPSTREAM.get((lab, key)),
                    "fingerprint": fingerprint(c),
                }  # fmt: skip
        if not entries:
            dev.pop(lab)
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
    check)], "stale": [(case, check, why)]}: FAILs the baseline does not list (or lists with
    another fingerprint, or where the check itself raised), FAILs it lists, listed deviations
    whose check passed (the baseline can be updated), and listed ones this run could not
    confirm (the check was not judged, or the case did not run)."""
    dev = baseline.get("deviations", {})
    out = {"new": [], "known": [], "fixed": [], "stale": []}
    ran = set()
    for case, res in rows:
        lab = _label(case)
        ran.add(lab)
        listed = dev.get(lab, {})
        seen = set()
        for c in res:
            key = _key(c.name)
            seen.add(key)
            entry = listed.get(key)
            if c.passed is False:
                same = entry is not None and not _raised(c) and (
                    entry.get("fingerprint") is None
                    or entry.get("fingerprint") == fingerprint(c))  # fmt: skip
                if same:
                    out["known"].append((lab, key, entry.get("upstream")))
                else:
                    out["new"].append((lab, key, c.detail))
            elif entry is not None and c.passed is True:
                out["fixed"].append((lab, key))
            elif entry is not None:
                out["stale"].append((lab, key, "not judged in this run"))
        for key in set(listed) - seen:
            out["stale"].append((lab, key, "the check did not run"))
    for lab in set(dev) - ran:
        for key in dev[lab]:
            out["stale"].append((lab, key, "the case did not run"))
    return out
