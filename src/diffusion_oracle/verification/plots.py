"""Plots of a :class:`~diffusion_oracle.verification.report.VerifyReport`: the convergence
plot (log-log errors with the fitted slopes) and, for 1-D and 2-D targets, the samples over the
exact density. A report whose runs failed draws what it has and says so in the title instead of
drawing an empty plot."""

from __future__ import annotations

import numpy as np


def plot_report(report, folder) -> list:
    """Save ``convergence_<sampler>.png`` (log-log errors with the fitted slope) and, for
    2-D and 1-D targets, ``samples_<sampler>.png`` (samples over the exact density)."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in report.sampler)
    paths = []
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for key, label, fit in (
        ("w2", "tier 1: exact W2", report.order_tier1),
        ("path_error", "tier 2: pathwise", report.order_tier2),
    ):
        pts = [(r.steps, getattr(r, key)) for r in report.rows if getattr(r, key)]
        if not pts:
            continue
        ns, es = zip(*pts)
        (line,) = ax.loglog(ns, es, "o-", label=label)
        if fit is not None:
            n0, e0 = fit.window[-1], dict(pts)[fit.window[-1]]
            nn = np.array([min(ns), max(ns)], dtype=float)
            ax.loglog(
                nn,
                e0 * (nn / n0) ** (-fit.slope),
                "--",
                color=line.get_color(),
                alpha=0.6,
                label=f"slope {fit.slope:.2f}",
            )
    title = f"{report.sampler}: {report.verdict.value}"
    if report.declared_order:
        title += f" (declared order {report.declared_order})"
    if not ax.lines:  # nothing measured: say so rather than draw an empty frame
        ax.text(0.5, 0.5, "no errors measured\n(see the report's checks)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("steps")
    ax.set_ylabel("error")
    if ax.lines:
        ax.legend(fontsize=8)
    # fixed margins that fit the title and the axis labels of this figure size: tight_layout
    # measures every text extent and took 40% of the plotting time of a verify
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)
    p = folder / f"convergence_{safe}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    tg = report._target_obj
    if report.samples is not None and tg is not None and tg.d in (1, 2):
        fig, ax = plt.subplots(figsize=(4.2, 4.0))
        x = report.samples
        if tg.d == 2:
            lim = 1.2 * np.abs(x).max()
            g = np.linspace(-lim, lim, 200)
            X, Y = np.meshgrid(g, g)
            lp = tg.log_prob(np.stack([X.ravel(), Y.ravel()], 1)).reshape(X.shape)
            ax.scatter(x[:2000, 0], x[:2000, 1], s=2, color="C3", alpha=0.5, zorder=1)
            ax.contour(
                X, Y, np.exp(lp), levels=5, cmap="viridis", linewidths=0.7, alpha=0.8, zorder=2
            )
            ax.set_aspect("equal")
        else:
            g = np.linspace(x.min() - 0.5, x.max() + 0.5, 500)
            ax.plot(g, np.exp(tg.log_prob(g[:, None])), color="C0", label="exact p_0")
            ax.hist(x[:, 0], bins=100, density=True, alpha=0.4, color="C3", label="samples")
            ax.legend(fontsize=8)
        ax.set_title(f"{report.sampler}: samples over exact p_0", fontsize=9)
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.93)
        p = folder / f"samples_{safe}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
