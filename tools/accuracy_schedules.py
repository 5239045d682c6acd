"""Measure the float64 schedules against 50-digit mpmath; prints the table of docs/accuracy.md.

Run from the repository root with the project installed: ``python tools/accuracy_schedules.py``.
For each built-in schedule, 13 log-SNR values spread over [-30, 30] (clipped to the schedule's
range), t = t_from_log_snr(lambda); the worst relative error per quantity (log-SNR relative to
max(|lambda|, 1); the inverse relative to t + 1e-3, see docs/accuracy.md).
"""

import sys
from pathlib import Path

import mpmath as mp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mp_oracle import mp_quantities, mp_t_from_log_snr  # noqa: E402

from diffusion_oracle.reference import SCHEDULES, DiscreteSchedule, get_schedule  # noqa: E402

KEYS = ["alpha", "sigma", "log_snr", "d_alpha", "d_sigma", "d_log_snr", "f", "g_squared"]


def main():
    print("| schedule | " + " | ".join([*KEYS, "inverse"]) + " |")
    print("|" + "---|" * (len(KEYS) + 2))
    for name in SCHEDULES:
        s = get_schedule(name)
        lo, hi = s.log_snr_range()
        lams = np.linspace(max(lo, -30) + 1e-9, min(hi, 30) - 1e-9, 13)
        if isinstance(s, DiscreteSchedule) and np.isneginf(s._ell[-1]):
            lams = lams[lams >= s.log_snr_at(s.T - 1)]
        worst = dict.fromkeys([*KEYS, "inverse"], 0.0)
        for lam in lams:
            t64 = float(s.t_from_log_snr(lam))
            tm = mp_t_from_log_snr(s, lam, t64)
            worst["inverse"] = max(worst["inverse"], abs(t64 - float(tm)) / (float(tm) + 1e-3))
            q, _ = mp_quantities(s, mp.mpf(t64))
            for k in KEYS:
                ref = float(q[k])
                den = max(abs(ref), 1.0) if k == "log_snr" else abs(ref)
                err = abs(getattr(s, k)(t64) - ref) / den if den else abs(getattr(s, k)(t64))
                worst[k] = max(worst[k], err)
        print(f"| {name} | " + " | ".join(f"{worst[k]:.1e}" for k in [*KEYS, "inverse"]) + " |")


if __name__ == "__main__":
    main()
