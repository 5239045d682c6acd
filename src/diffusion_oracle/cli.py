"""Command-line interface: ``diffusion-oracle <command>``.

Commands
  verify         verify samplers against exact ground truth (the main job)
  derive         print a SymPy derivation checked by the CAS
  ground-truth   print the exact ground truth of a target under a schedule and save plots
  likelihood     the exact model's ELBO terms, exact log-likelihood, irreducible loss, plots
  conformance    check another library's samplers against the reference (diffusers)
  targets        list the built-in targets
  schedules      list the built-in schedules with their log-SNR ranges
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from diffusion_oracle import __version__
from diffusion_oracle.reference import DEFAULT_TARGETS, SCHEDULES, get_schedule, get_target

DEFAULT_TIMES = (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0)


def _times(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--times must be comma-separated numbers, got {text!r}"
        ) from None
    if not vals or any(not (0.0 <= v <= 1.0) for v in vals):
        raise argparse.ArgumentTypeError(f"--times must be numbers in [0, 1], got {text!r}")
    return vals


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return f"{v:>10}"
    return f"{v:>10.4g}"


def ground_truth(target_name: str, schedule_name: str, times, out: Path | None, seed: int) -> str:
    """The exact ground-truth report as text; plots to ``out`` when given."""
    target = get_target(target_name)
    schedule = get_schedule(schedule_name)
    lines = []
    lines.append(f"diffusion-oracle {__version__}: exact ground truth")
    lines.append(f"target   {target_name}: {target!r}")
    lines.append(
        f"schedule {schedule_name}: {schedule!r}  log-SNR range {schedule.log_snr_range()}"
    )
    m0 = target.mean()
    cov0 = target.covariance()
    lines.append(
        f"data     E[x0] norm {np.linalg.norm(m0):.6g}, tr Cov[x0] {np.trace(cov0):.6g}, "
        f"weights {np.array2string(target.weights, precision=4, max_line_width=200)}"
    )
    probe = target.means[0]
    lines.append(
        f"probe    x = alpha(t) * mu_0 (the first mode's centre, diffused), mu_0 = "
        f"{np.array2string(probe[:4], precision=4)}{' ...' if target.d > 4 else ''}"
    )
    lines.append("")
    header = (
        f"{'t':>6} {'alpha':>10} {'sigma':>10} {'log_snr':>10} {'tr Cov[x_t]':>12} "
        f"{'log p_t(x)':>11} {'r_0(x)':>8} {'|score|':>10} {'|E[x0|x]-mu_0|':>15} "
        f"{'tr Cov[x0|x]':>13}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for t in times:
        a, s = schedule.alpha(t), schedule.sigma(t)
        lam = schedule.log_snr(t)
        tr_t = a * a * np.trace(cov0) + target.d * s * s
        if s == 0.0:
            x = probe[None]
            lp = target.log_prob(x)[0]
            r0 = target.responsibilities(x)[0, 0]
            lines.append(
                f"{t:>6.3f} {_fmt(a)} {_fmt(s)} {_fmt(lam)} {tr_t:>12.5g} {lp:>11.5g} "
                f"{r0:>8.4f} {'(sigma=0)':>10} {0.0:>15.3g} {0.0:>13.3g}"
            )
            continue
        x = (a * probe)[None]
        lp = target.log_prob(x, a, s)[0]
        r0 = target.responsibilities(x, a, s)[0, 0]
        sc = np.linalg.norm(target.score(x, a, s)[0])
        x0 = target.denoise(x, a, s)[0]
        pc = np.trace(target.posterior_cov(x, a, s)[0])
        lines.append(
            f"{t:>6.3f} {_fmt(a)} {_fmt(s)} {_fmt(lam)} {tr_t:>12.5g} {lp:>11.5g} "
            f"{r0:>8.4f} {sc:>10.4g} {np.linalg.norm(x0 - probe):>15.4g} {pc:>13.4g}"
        )
    lines.append("")
    lines.append(
        "All numbers are closed forms (float64): p_t = sum_k w_k N(alpha mu_k, "
        "alpha^2 Sigma_k + sigma^2 I)."
    )
    if out is not None:
        paths = _plots(target, schedule, times, out, seed, target_name, schedule_name)
        lines.append("plots: " + ", ".join(str(p) for p in paths))
    return "\n".join(lines)


def _plots(target, schedule, times, out: Path, seed: int, tname: str, sname: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    ts = [t for t in times if schedule.sigma(t) > 0] or [0.5]
    fig, axes = plt.subplots(1, len(ts), figsize=(3.2 * len(ts), 3.2), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, t in tqdm(list(zip(axes[0], ts)), desc="plotting p_t", unit="t", file=sys.stderr):
        a, s = schedule.alpha(t), schedule.sigma(t)
        if target.d == 2:
            lim = 1.3 * (
                a * np.abs(target.means).max() + 3 * np.sqrt(a * a * target._evals.max() + s * s)
            )
            g = np.linspace(-lim, lim, 160)
            X, Y = np.meshgrid(g, g)
            pts = np.stack([X.ravel(), Y.ravel()], axis=1)
            logp = target.log_prob(pts, a, s).reshape(X.shape)
            ax.imshow(np.exp(logp), extent=(-lim, lim, -lim, lim), origin="lower", cmap="magma")
            gq = np.linspace(-lim, lim, 15)
            XQ, YQ = np.meshgrid(gq, gq)
            sc = target.eps(np.stack([XQ.ravel(), YQ.ravel()], 1), a, s)
            ax.quiver(XQ, YQ, -sc[:, 0], -sc[:, 1], color="white", alpha=0.6)
            ax.set_aspect("equal")
        else:
            u = np.zeros(target.d)
            u[0] = 1.0
            if target.d > 1:
                u = rng.standard_normal(target.d)
                u /= np.linalg.norm(u)
            # the projection of a Gaussian mixture on u is a 1-D Gaussian mixture
            mu_p = a * target.means @ u
            var_p = a * a * np.einsum("i,kij,j->k", u, target.covs, u) + s * s
            proj = type(target)(target.weights, mu_p[:, None], var_p, covariance_type="iso")
            lo, hi = (mu_p - 4 * np.sqrt(var_p)).min(), (mu_p + 4 * np.sqrt(var_p)).max()
            g = np.linspace(lo, hi, 600)
            ax.plot(g, np.exp(proj.log_prob(g[:, None])), color="C0")
            xs = target.diffuse(a, s).sample(4000, rng) @ u
            ax.hist(xs, bins=80, density=True, alpha=0.35, color="C1")
            ax.set_xlabel("x" if target.d == 1 else "random projection u^T x")
        ax.set_title(f"t={t:g}  log-SNR={schedule.log_snr(t):.2f}", fontsize=9)
    fig.suptitle(f"exact p_t: {tname} under {sname}", fontsize=10)
    fig.tight_layout()
    p1 = out / f"ground_truth_{tname}_{sname}.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    tt = np.linspace(0, 1, 400)
    lam = np.asarray(schedule.log_snr(tt))
    ax.plot(tt, np.clip(lam, -35, 35), label="log-SNR (clipped to +-35)")
    ax.set_xlabel("t")
    ax.set_ylabel("log-SNR")
    ax2 = ax.twinx()
    ax2.plot(tt, schedule.alpha(tt), "C1--", label="alpha")
    ax2.plot(tt, schedule.sigma(tt), "C2--", label="sigma")
    ax2.set_ylabel("alpha, sigma")
    fig.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{sname}", fontsize=10)
    fig.tight_layout()
    p2 = out / f"schedule_{sname}.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def likelihood_report(
    target_name: str,
    schedule_name: str,
    n: int,
    variance: str,
    out: Path | None,
    seed: int,
) -> str:
    """The ``likelihood`` command's report: for the exact model of a built-in target under a
    discrete schedule, the DDPM bound's terms (Monte Carlo over ``n`` exact draws), the exact
    negative log-likelihood of the same draws, their gap, bits/dim, a PF-ODE likelihood check,
    and the irreducible eps loss (the floor of L_simple) over time; plots to ``out``."""
    from diffusion_oracle.reference import (
        DiscreteSchedule,
        ExactModel,
        bits_per_dim,
        ddpm_elbo,
        irreducible_loss,
        pf_ode_log_likelihood,
    )

    target = get_target(target_name)
    schedule = get_schedule(schedule_name)
    if not isinstance(schedule, DiscreteSchedule):
        raise ValueError(
            f"--schedule must be a discrete (ddpm-*) schedule for the DDPM bound, got "
            f"{schedule_name!r}"
        )
    gen = np.random.default_rng(seed)
    x0 = target.sample(n, rng=gen)
    terms = ddpm_elbo(
        ExactModel(target, schedule), schedule, x0, variance=variance, rng=gen, progress=True
    )
    nll = -target.log_prob(x0)
    gap = terms.total - nll
    d = target.d

    def row(name, vals):
        vals = np.asarray(vals, dtype=np.float64)
        se = vals.std(ddof=1) / np.sqrt(vals.size)
        bpd = float(bits_per_dim(vals.mean(), d))
        return f"{name:<34} {vals.mean():>12.6f} +- {se:<10.2g} {bpd:>10.5f}"

    lines = [
        f"diffusion-oracle {__version__}: likelihood and bound of the exact model",
        f"target   {target_name}: {target!r}",
        f"schedule {schedule_name}: {schedule!r}, variance {variance}, n = {n}, seed {seed}",
        "",
        f"{'quantity (nats per example)':<34} {'mean':>12}    {'stderr':<10} {'bits/dim':>10}",
        row("prior L_T", terms.prior),
        row("diffusion sum_{n>=2} L_{n-1}", terms.diffusion.sum(1)),
        row("decoder L_0 (Gaussian)", terms.decoder),
        row("-ELBO", terms.total),
        row("exact -log p(x_0)", nll),
        row("gap -ELBO - (-log p) (>= 0)", gap),
    ]
    m = min(n, 32)
    ode = pf_ode_log_likelihood(target, schedule, x0[:m], t0=0.0, t1=1.0)
    err = np.abs(ode.log_prob + nll[:m]).max()
    lines.append(
        f"\nPF-ODE log-likelihood (exact divergence) on {m} points: max |ODE - exact| = "
        f"{err:.2e} nats"
    )
    T = schedule.T
    steps = np.arange(1, T + 1)
    per_step = max(200, 200_000 // T)  # exact draws of x_t per step
    floors = [irreducible_loss(target, schedule, k / T, n=per_step, rng=k) for k in steps]
    vals = np.array([f.value for f in floors])
    errs = np.array([f.stderr for f in floors])
    lines.append(
        f"irreducible eps loss averaged over the {T} steps (the floor of L_simple): "
        f"{vals.mean():.5f} +- {np.sqrt((errs**2).sum()) / T:.1g}   (an eps-model that ignores "
        f"x_t scores d = {d})"
    )
    lines.append(f"{'t':>8} {'log-SNR':>9} {'E|eps - E[eps|x_t]|^2':>24}")
    for k in np.unique(np.geomspace(1, T, 9).round().astype(int)):
        t = k / T
        lines.append(
            f"{t:>8.4g} {float(schedule.log_snr(t)):>9.3f} {vals[k - 1]:>14.6f} +- "
            f"{errs[k - 1]:.1g}"
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        ns = np.arange(2, T + 1)
        axes[0].semilogy(ns, np.maximum(terms.diffusion.mean(0), 1e-300), lw=1)
        axes[0].set_xlabel("step n")
        axes[0].set_ylabel("L_{n-1} (nats)")
        axes[0].set_title(f"bound terms, -ELBO {terms.mean():.4f} vs -log p {nll.mean():.4f}")
        axes[1].plot(steps / T, vals, lw=1)
        axes[1].fill_between(steps / T, vals - 2 * errs, vals + 2 * errs, alpha=0.3)
        axes[1].set_xscale("log")
        axes[1].axhline(d, color="grey", ls=":", lw=1)
        axes[1].set_xlabel("t (log scale)")
        axes[1].set_ylabel("E|eps - E[eps|x_t]|^2")
        axes[1].set_title("irreducible eps loss (floor of L_simple)")
        fig.suptitle(f"{target_name} under {schedule_name}", fontsize=10)
        fig.tight_layout()
        path = out / f"likelihood_{target_name}_{schedule_name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        lines.append(f"\nplot: {path}")
    return "\n".join(lines)


def run_conformance(args) -> int:
    """The ``conformance`` command: the markdown report of ``validation.conformance``."""
    if args.update_baseline and args.baseline is None:
        print("error: --update-baseline needs --baseline FILE", file=sys.stderr)
        return 2
    if args.library in ("flow_matching", "torchcfm"):
        try:
            from diffusion_oracle.validation.flow_libraries import conformance_report as fl_report

            text, rows = fl_report((args.library,), progress=True)
        except ImportError as exc:
            print(f"error: {exc}; pip install --no-deps flow_matching==1.0.10 torchcfm==1.0.7 "
                  "&& pip install POT", file=sys.stderr)  # fmt: skip
            return 2
        return _emit_report(args, text, rows)
    try:
        from diffusion_oracle.validation.conformance import CASES, conformance_report
    except ImportError as exc:  # pragma: no cover - diffusers missing
        print(f"error: {exc}; pip install 'diffusion-oracle[validation]'", file=sys.stderr)
        return 2
    if args.library == "k-diffusion":
        try:
            from diffusion_oracle.validation.k_diffusion import conformance_report as kd_report

            text, rows = kd_report(args.target, checks=args.checks, jobs=max(1, args.jobs))
        except ImportError as exc:
            print(
                f"error: {exc}; pip install torchsde torchdiffeq && pip install --no-deps "
                "k-diffusion",
                file=sys.stderr,
            )
            return 2
        return _emit_report(args, text, rows)
    cases = CASES
    if args.schedulers:
        wanted = {w.strip() for w in args.schedulers.split(",") if w.strip()}
        unknown = wanted - {c.scheduler for c in CASES}
        if unknown:
            print(f"error: --schedulers names no catalogued scheduler: {sorted(unknown)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        cases = tuple(c for c in CASES if c.scheduler in wanted)
    try:
        text, rows = conformance_report(cases, args.target, checks=args.checks,
                                        jobs=max(1, args.jobs))  # fmt: skip
    except ImportError as exc:
        print(f"error: {exc}; pip install 'diffusion-oracle[validation]'", file=sys.stderr)
        return 2
    return _emit_report(args, text, rows)


def _rows_json(rows) -> list:
    from dataclasses import asdict

    from diffusion_oracle.verification.report import _clean

    out = []
    for case, res in rows:
        label = case.label if hasattr(case, "label") else str(case)
        out.append({"case": label, "checks": [_clean(asdict(c)) for c in res]})
    return out


def _emit_report(args, text, rows) -> int:
    import json

    from diffusion_oracle.validation.checks import baseline as bl

    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"conformance_{args.library}.md"
        path.write_text(text)
        print(f"report: {path}")
        jpath = args.out / f"conformance_{args.library}.json"
        jpath.write_text(json.dumps(_rows_json(rows), indent=2,
                                    default=lambda o: o.item() if hasattr(o, "item") else str(o))
                         + "\n")  # numpy scalars (bool_) the cleaner leaves; fmt: skip
        print(f"report: {jpath}")
        from diffusion_oracle.validation.conformance import plot_report

        for p in plot_report(rows, args.out, args.library.replace("-", "_")):
            print(f"plot: {p}")
    failed = any(c.passed is False for _, res in rows for c in res)
    if args.baseline is None:
        if args.update_baseline:
            print("error: --update-baseline needs --baseline FILE", file=sys.stderr)
            return 2
        return 1 if failed else 0
    version = _library_version(args.library)
    if args.update_baseline:
        previous = bl.load(args.baseline) if args.baseline.exists() else None
        path = bl.save(bl.from_rows(rows, args.library, version, previous), args.baseline)
        print(f"baseline: {path} written (the cases of this run replaced, the others kept)")
        return 0
    try:
        known = bl.load(args.baseline)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmp = bl.compare(rows, known)
    print(f"baseline {args.baseline} ({known.get('library')} {known.get('version')}): "
          f"{len(cmp['known'])} known deviations, {len(cmp['new'])} new, {len(cmp['fixed'])} "
          f"fixed, {len(cmp['stale'])} not confirmed by this run")  # fmt: skip
    if known.get("version") not in (None, version):
        print(f"  note: the baseline was written on {known.get('library')} "
              f"{known.get('version')}; this is {version}")  # fmt: skip
    for lab, key, detail in cmp["new"]:
        print(f"  NEW  {lab} / {key}: {detail[:200]}")
    for lab, key in cmp["fixed"]:
        print(f"  FIXED {lab} / {key} (update the baseline)")
    for lab, key, why in cmp["stale"][:20]:
        print(f"  NOT CONFIRMED {lab} / {key}: {why}")
    return 1 if cmp["new"] else 0


def _library_version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"diffusers": "diffusers", "flow_matching": "flow_matching",
                        "torchcfm": "torchcfm"}.get(library, "k-diffusion"))  # fmt: skip
    except PackageNotFoundError:
        return "unknown"


def _checks(text: str) -> tuple:
    try:
        vals = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--checks must be comma-separated integers in 1..12, got {text!r}"
        ) from None
    if not vals or any(v < 1 or v > 12 for v in vals):
        raise argparse.ArgumentTypeError(f"--checks must name checks 1..12, got {text!r}")
    return vals


def _steps(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps must be comma-separated integers, got {text!r}"
        ) from None
    if not vals or any(v < 2 for v in vals):
        raise argparse.ArgumentTypeError(f"--steps needs integers >= 2, got {text!r}")
    return vals


def _tiers(text: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tiers must be comma-separated tier numbers (1, 2, 3), got {text!r}"
        ) from None
    if any(v not in (1, 2, 3) for v in vals):
        raise argparse.ArgumentTypeError(f"--tiers must be drawn from 1, 2, 3, got {text!r}")
    return vals


# exit codes of `verify`: PASS, FAIL, usage error, INCONCLUSIVE
EXIT = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}


def _reference(spec):
    """A built-in sampler by name (see `diffusion-oracle verify --help`) or 'module:attr'."""
    from diffusion_oracle.reference.samplers import BUILTIN_SAMPLERS

    if spec is None:
        return None
    builtins = BUILTIN_SAMPLERS()
    if spec in builtins:
        return builtins[spec]
    if ":" in spec:
        return _load_sampler(spec)
    raise ValueError(
        f"reference must be a built-in sampler name ({', '.join(sorted(builtins))}) or "
        f"'module:attr', got {spec!r}"
    )


def _out_folder(text: str):
    """A folder for plots; the empty string means none (Path('') would be the current one)."""
    return Path(text) if text.strip() else None


def _order(text: str):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--order must be a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"--order must be a finite number > 0, got {text!r}")
    return int(v) if v.is_integer() else v


def _int_at_least(lo: int, option: str):
    """An argparse type: an integer >= lo (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be an integer >= {lo}, got {text!r}") from None  # fmt: skip
        if v < lo:
            raise argparse.ArgumentTypeError(f"{option} must be an integer >= {lo}, got {text!r}")
        return v

    return parse


def _json_dict(text: str) -> dict:
    import json

    try:
        val = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {exc}") from None
    if not isinstance(val, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return val


def _pipeline_sampler(args):
    """The sampler of 'diffusers:<Class>' or 'k-diffusion:<sample_fn>' with the pipeline
    options; None for any other SAMPLER (ValueError naming a bad one)."""
    from diffusion_oracle.adapters import from_diffusers, from_k_diffusion

    lib, _, name = args.sampler.partition(":")
    run_dtype = args.dtype or "float32"
    cls = None
    if lib == "diffusers":
        try:
            import diffusers
        except ImportError as exc:
            raise ValueError(f"diffusers is not installed: {exc}") from None
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and hasattr(cls, "set_timesteps")):
            raise ValueError(f"diffusers has no scheduler class {name!r}")
    elif lib != "k-diffusion" and name:
        obj = _resolve(args.sampler)
        if isinstance(obj, type) and any(
            c.__module__.startswith("diffusers.") for c in obj.__mro__[1:]
        ):
            cls = obj  # a user's subclass of a diffusers scheduler: the pipeline route too
    if cls is not None:
        config = dict(args.config)
        return from_diffusers(lambda: cls(**config), order=args.order, stochastic=None,
                              dtype=run_dtype, set_timesteps=args.set_timesteps,
                              step=args.step_kwargs, strength=args.strength,
                              begin_index=args.begin_index, inverse=args.inverse)  # fmt: skip
    if lib == "k-diffusion":
        from diffusion_oracle.validation.k_diffusion import load_sampling

        try:
            fn = getattr(load_sampling(), name, None)
        except ImportError as exc:
            raise ValueError(str(exc)) from None
        if not callable(fn):
            raise ValueError(f"k_diffusion.sampling has no sampler {name!r}")
        return from_k_diffusion(fn, wrapper=args.wrapper, quantize=not args.no_quantize,
                                sigmas=args.sigmas, dtype=run_dtype, order=args.order,
                                stochastic=None, **args.step_kwargs)  # fmt: skip
    return None


def _resolve(spec: str):
    """'module:attr' -> the object (the current folder importable)."""
    import importlib

    if ":" not in spec:
        raise ValueError(f"sampler must be 'module:function', got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    here = os.getcwd()  # absolute: a cached finder for "." keeps the folder it first saw
    if here not in sys.path:
        sys.path.insert(0, here)
    importlib.invalidate_caches()
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {mod_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _load_sampler(spec: str):
    """'module:attr' -> the callable (a class is instantiated with no arguments)."""
    obj = _resolve(spec)
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


def _verify_one(sampler, kw, out=None):
    """Verify one sampler and save its plots (run in a worker process)."""
    from diffusion_oracle.harness import verify

    report = verify(sampler, progress=False, **kw)
    report.plot_paths = report.plot(out) if out else []
    return report


def _write_json(path, payload) -> None:
    import json

    text = json.dumps(payload, indent=2)
    if str(path) == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")


@contextmanager
def _one_thread_per_process(torch_too: bool):
    """One BLAS thread (threadpoolctl) and, with ``torch_too`` or torch already imported, one
    torch thread per process for the duration, then the previous settings (forked workers
    inherit them). verify's work is many small array operations, where the libraries' threads
    only contend for the cores: on the 2-core box
    OpenBLAS's threads took 2.4x the CPU time of the NumPy path (ring8), torch's two threads 16x
    the time of the torch path on the CPU; with several worker processes they would
    oversubscribe the cores as well."""
    from threadpoolctl import threadpool_limits

    blas = threadpool_limits(limits=1)
    torch = sys.modules.get("torch")
    if torch is None and torch_too:
        try:
            import torch
        except ImportError:  # reported by verify (device= needs torch)
            torch = None
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)
        blas.restore_original_limits()


def run_verify(args) -> int:
    """The ``verify`` command: one user sampler (full report) or every built-in sampler
    (conformance table). Returns the exit code: 0 PASS, 1 FAIL, 2 usage error, 3 INCONCLUSIVE
    (for the built-ins: the worst verdict)."""
    # torch's threads too when the torch path runs (a --device) or torch is loaded already;
    # the default NumPy path on a machine without a GPU never imports torch
    with _one_thread_per_process(args.device is not None):
        return _run_verify(args)


def _run_verify(args) -> int:
    from tqdm import tqdm

    from diffusion_oracle.harness import verify
    from diffusion_oracle.reference.samplers import BUILTIN_SAMPLERS

    pipeline = None
    try:
        if args.sampler:
            pipeline = _pipeline_sampler(args)
        inversion = pipeline is not None and getattr(pipeline, "inverse", False)
        reference = args.reference if inversion else _reference(args.reference)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # a pipeline sampler runs on its network's training schedule (verify's default for it)
    schedule = None if pipeline is not None and args.schedule is None else get_schedule(
        args.schedule or "vp-linear")  # fmt: skip
    kw = dict(
        target=args.target,
        schedule=schedule,
        steps=args.steps,
        grid=args.grid,
        prediction=args.prediction,
        tier3_steps=args.tier3_steps,
        n_samples=args.n_samples,
        seed=args.seed,
        device=args.device,
        tiers=args.tiers,
        reference=reference,
        dtype=args.dtype,
        accept_prior_mismatch=args.accept_prior_mismatch,
    )
    if args.sampler:
        try:
            sampler = pipeline or _load_sampler(args.sampler)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            report = verify(sampler, **kw)
        except (ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json != "-":
            print(report)
        if args.out:
            paths = report.plot(args.out)
            if args.json != "-":
                print("plots: " + ", ".join(str(p) for p in paths))
        if args.json:
            _write_json(args.json, report.to_dict())
        return EXIT[report.verdict.value]
    if reference is not None:
        print("error: --reference needs a SAMPLER to compare with it", file=sys.stderr)
        return 2
    samplers = list(BUILTIN_SAMPLERS().values())
    # one process per GPU: a forked worker cannot reuse the parent's CUDA context
    on_gpu = args.device is not None and args.device.startswith("cuda")
    jobs = 1 if on_gpu else max(1, args.jobs)
    bar = tqdm(
        total=len(samplers), desc="verifying built-in samplers", unit="sampler", file=sys.stderr
    )
    if jobs == 1:
        reports = []
        for s in samplers:
            reports.append(_verify_one(s, kw, args.out))
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        if ctx is not None:  # what every worker needs, computed once before they fork
            from diffusion_oracle.harness import warm_caches

            warm_caches(args.target, args.n_samples, args.tiers)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            # first-order samplers run tier 3 at 4x the steps: submit them first so that the two
            # workers finish together
            order = sorted(
                range(len(samplers)), key=lambda i: (getattr(samplers[i], "order", 1) or 1) > 1
            )
            futures = [None] * len(samplers)
            for i in order:
                futures[i] = pool.submit(_verify_one, samplers[i], kw, args.out)
            for f in futures:
                f.add_done_callback(lambda _f: bar.update(1))
            reports = [f.result() for f in futures]
    bar.close()
    if args.json:
        _write_json(args.json, [r.to_dict() for r in reports])
        if args.json == "-":
            return max((EXIT[r.verdict.value] for r in reports), default=0, key=_severity)
    print(f"diffusion-oracle {__version__}: conformance of the built-in samplers")
    print(f"target {args.target}, schedule {schedule!r}, steps {args.steps}")
    print(
        "tier 1: exact W2 order on the moment-matched Gaussian; tier 2: pathwise order against "
        "the exact flow map (deterministic samplers); tier 3: statistical tests at the stated "
        "false-alarm rate; landing: the final step on a point mass; prior: the terminal-SNR "
        "mismatch\n"
    )
    head = (
        f"{'sampler':<28} {'grid':<8} {'order':>5} {'tier 1':>7} {'tier 2':>7} "
        f"{'tier 3 (resp/KS/NLL/MMD)':>25} {'land':>5} {'prior':>5}  verdict (decided by)"
    )
    print(head)
    print("-" * len(head))

    def mark(r, name):
        try:
            c = r.check(name)
        except KeyError:
            return "-"
        return {"PASS": "ok", "FAIL": "FAIL"}.get(c.verdict.value, c.verdict.value[:4].lower())

    for r in reports:
        t1 = f"{r.order_tier1.slope:.2f}" if r.order_tier1 else "-"
        t2 = f"{r.order_tier2.slope:.2f}" if r.order_tier2 else "-"
        t3 = "/".join("ok" if t.passed else "FAIL" for t in r.stats) or "-"
        print(
            f"{r.sampler:<28} {r.grid:<8} {r.declared_order!s:>5} {t1:>7} {t2:>7} {t3:>25} "
            f"{mark(r, 'final step (landing)'):>5} {mark(r, 'prior (terminal SNR)'):>5}  "
            f"{r.verdict.value} {_decided(r)}"
        )
        for c in r.checks:
            if c.verdict.value in ("FAIL", "INCONCLUSIVE"):
                print(f"    {c.line()}")
    if reports and reports[0].notes:
        print("\n" + "\n".join(sorted({n for r in reports for n in r.notes})))
    if args.out:
        n_plots = sum(len(r.plot_paths) for r in reports)
        print(f"\nplots: {n_plots} files in {args.out}/")
    counts = {v: [r.sampler for r in reports if r.verdict.value == v] for v in EXIT}
    print(
        f"\n{len(counts['PASS'])} of {len(reports)} samplers pass"
        + (f"; failed: {', '.join(counts['FAIL'])}" if counts["FAIL"] else "")
        + (f"; inconclusive: {', '.join(counts['INCONCLUSIVE'])}" if counts["INCONCLUSIVE"] else "")
    )
    print(
        "every verdict is decided by the checks listed in each report (PASS: all judged checks "
        "passed and the output law was judged)"
    )
    return max((EXIT[r.verdict.value] for r in reports), default=0, key=_severity)


_SHORT = {
    "runs": "runs",
    "model calls": "calls",
    "order (tier 1, exact)": "order-t1",
    "order (tier 2, pathwise)": "order-t2",
    "same-grid reference": "ref",
    "final step (landing)": "landing",
    "prior (terminal SNR)": "prior",
}


def _decided(report) -> str:
    """What decided a verdict, in a few words: the deciding checks, tier-3 tests as one."""
    names = report.decided_by
    if not names:
        return "(nothing judged the law)"
    t3 = [n for n in names if n.startswith("tier 3")]
    short = [_SHORT.get(n, n) for n in names if not n.startswith("tier 3")]
    if t3:
        short.append(f"tier3({len(t3)})")
    return "by " + ",".join(short)


def _severity(code: int) -> int:
    """FAIL (1) outranks INCONCLUSIVE (3), which outranks PASS (0)."""
    return {0: 0, 3: 1, 1: 2}[code]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``diffusion-oracle`` and its subcommands."""
    p = argparse.ArgumentParser(
        prog="diffusion-oracle",
        description=(
            "Exact mathematical ground truth for diffusion models. Prints closed-form answers "
            "(diffused densities, scores, denoisers, posteriors) for built-in targets under any "
            "built-in schedule, and saves plots."
        ),
        epilog="Example: diffusion-oracle ground-truth --target ring8 --schedule vp-cosine "
        "--out plots",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser(
        "verify",
        help="verify samplers against exact ground truth (default: every built-in sampler)",
        description=(
            "Verify a sampler against exact ground truth in three tiers: (1) its exact output "
            "law on the moment-matched Gaussian, probed as an affine map, W2 and the measured "
            "order; (2) for deterministic samplers, pathwise error against the exact "
            "probability-flow map on the target; (3) statistical tests of its samples against "
            "the exact mixture; (4) the final step on a point mass and the prior (terminal SNR). "
            "Without SAMPLER, every built-in sampler is verified and a conformance table "
            "printed. Exit code 0 PASS, 1 FAIL, 2 usage error, 3 INCONCLUSIVE (nothing "
            "decided it: see the report's check lines)."
        ),
        epilog="Example: diffusion-oracle verify mymod:my_sampler --target ring8 --steps 10,20,50",
    )
    v.add_argument(
        "sampler",
        nargs="?",
        default=None,
        help="'module:function' of a sampler(model, x_init, grid, *, rng); a class "
        "is instantiated without arguments",
    )
    v.add_argument("--target", default="ring8", choices=sorted(DEFAULT_TARGETS))
    v.add_argument(
        "--schedule",
        default=None,
        choices=sorted(SCHEDULES),
        help="the diffusion schedule (default vp-linear; a diffusers scheduler or a k-diffusion "
        "wrapper runs on its own training schedule)",
    )
    v.add_argument(
        "--steps",
        type=_steps,
        default=[8, 16, 32, 64, 128, 256, 512],
        help="comma-separated step counts for the order fits (default 8,...,512; one count "
        "gives no order: INCONCLUSIVE)",
    )
    v.add_argument(
        "--grid",
        default=None,
        choices=["uniform", "log_snr", "karras", "full", "leading", "trailing", "linspace"],
        help="time spacing (default: the sampler's default_grid, else the reference's, else "
        "log_snr); full, leading, trailing and linspace respace a discrete ddpm-* schedule",
    )
    v.add_argument(
        "--prediction",
        default="eps",
        choices=["eps", "x0", "v", "score", "velocity"],
        help="what the exact model returns (default eps)",
    )
    v.add_argument(
        "--tier3-steps",
        type=_int_at_least(2, "--tier3-steps"),
        default=None,
        help="step count of the statistical tier (default 256 for order >= 2, else 1024)",
    )
    v.add_argument(
        "--n-samples",
        type=_int_at_least(2, "--n-samples"),
        default=None,
        help="tier-3 sample size (default: resolves a 20%% error in the smallest weight)",
    )
    v.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0)
    v.add_argument(
        "--reference",
        default=None,
        help="reference sampler on the same grid: a built-in name (e.g. heun, ddim(eta=0)) or "
        "'module:attr'; its exact output law must be reproduced to rounding, and the grid "
        "family defaults to the reference's",
    )
    v.add_argument(
        "--tiers", type=_tiers, default=(1, 2, 3), help="tiers to run (default 1,2,3)"
    )
    v.add_argument(
        "--dtype",
        default=None,
        choices=["float64", "float32", "float16", "bfloat16"],
        help="the precision the sampler computes in (default: detected from what it hands the "
        "model); sets the rounding tolerances",
    )
    v.add_argument(
        "--accept-prior-mismatch",
        action="store_true",
        help="accept knowingly a schedule whose last marginal is not N(0, I) (nonzero terminal "
        "SNR); the prior check then says so and passes",
    )
    v.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="also write the report(s) as JSON to FILE ('-': stdout only)",
    )
    v.add_argument(
        "--device",
        default=None,
        help="run the torch implementation on this device (cuda, cpu, cuda:1, ...); default: "
        "CUDA when torch sees a GPU, else the NumPy reference",
    )
    v.add_argument(
        "--jobs",
        type=_int_at_least(1, "--jobs"),
        default=min(2, os.cpu_count() or 1),
        help="worker processes for the built-in run (default: up to 2)",
    )
    v.add_argument(
        "--out",
        type=_out_folder,
        default=Path("verify-output"),
        help="folder for plots (default verify-output; '' for none)",
    )
    pl = v.add_argument_group(
        "pipelines",
        "SAMPLER 'diffusers:<SchedulerClass>' (or 'module:Class' of a subclass of one) runs a "
        "diffusers scheduler as its pipelines do; "
        "'k-diffusion:<sample_fn>' a k-diffusion sampler on a model wrapper; both with the "
        "exact network answering at the level each label names, in --dtype (default float32, "
        "as shipped)",
    )
    pl.add_argument("--config", type=_json_dict, default={}, metavar="JSON",
                    help="the scheduler's constructor arguments, e.g. "
                    "'{\"use_karras_sigmas\": true}'")  # fmt: skip
    pl.add_argument("--set-timesteps", type=_json_dict, default={}, metavar="JSON",
                    help="set_timesteps keyword arguments (timesteps, sigmas, mu)")  # fmt: skip
    pl.add_argument("--step-kwargs", type=_json_dict, default={}, metavar="JSON",
                    help="step keyword arguments (eta, s_churn, ...); for k-diffusion the "
                    "sampler's")  # fmt: skip
    pl.add_argument("--strength", type=float, default=None,
                    help="img2img strength (the run starts part-way, set_begin_index)")
    pl.add_argument("--begin-index", type=_int_at_least(0, "--begin-index"), default=None,
                    help="start index into timesteps")  # fmt: skip
    pl.add_argument("--order", type=_order, default=None, help="the declared convergence order")
    pl.add_argument("--inverse", action="store_true",
                    help="an inversion scheduler: verified in inversion mode (--reference ddim "
                    "also judges it against the DDIM inversion of its convention)")  # fmt: skip
    pl.add_argument("--wrapper", default="CompVisDenoiser",
                    help="k-diffusion model wrapper (CompVisDenoiser, DiscreteEpsDDPMDenoiser, "
                    "CompVisVDenoiser, DiscreteVDDPMDenoiser)")  # fmt: skip
    pl.add_argument("--no-quantize", action="store_true",
                    help="k-diffusion: fractional labels (default: quantize=True, as shipped)")
    pl.add_argument("--sigmas", default="karras", choices=["karras", "exponential", "wrapper"],
                    help="k-diffusion sigma schedule on the wrapper's range (default karras)")
    g = sub.add_parser(
        "ground-truth",
        help="print the exact ground truth of a target under a schedule, save plots",
        description=(
            "For each time t: alpha, sigma, log-SNR, the exact trace of Cov[x_t], and at a probe "
            "point (the first mode, diffused) log p_t, the responsibility of mode 0, the score "
            "norm, the denoiser error and the posterior covariance trace. With --out, saves the "
            "exact density p_t (2-D: heat map with the E[eps|x] field; else a random projection "
            "with exact samples) and the schedule curves as PNG files."
        ),
    )
    g.add_argument(
        "--target",
        default="ring8",
        choices=sorted(DEFAULT_TARGETS),
        help="built-in target (default: ring8)",
    )
    g.add_argument(
        "--schedule",
        default="vp-linear",
        choices=sorted(SCHEDULES),
        help="built-in schedule with default parameters (default: vp-linear)",
    )
    g.add_argument(
        "--times",
        type=_times,
        default=list(DEFAULT_TIMES),
        help="comma-separated times in [0, 1] (default: 0,0.05,0.2,0.4,0.6,0.8,1)",
    )
    g.add_argument("--out", type=Path, default=None, help="folder for PNG plots (default: none)")
    g.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0,
                   help="seed for the sampled histograms")  # fmt: skip
    lk = sub.add_parser(
        "likelihood",
        help="the exact model's ELBO terms, exact log-likelihood and irreducible loss",
        description=(
            "For the exact model of a built-in target under a discrete schedule: the DDPM bound "
            "L_T + sum L_{n-1} + L_0 (Monte Carlo over exact draws), the exact -log p of the "
            "same draws and the gap (never negative), bits/dim, a PF-ODE likelihood check and "
            "the irreducible eps loss E|eps - E[eps|x_t]|^2 over t (how far L_simple can go)."
        ),
    )
    lk.add_argument("--target", default="ring8", choices=sorted(DEFAULT_TARGETS))
    lk.add_argument(
        "--schedule",
        default="ddpm-linear",
        choices=sorted(k for k in SCHEDULES if k.startswith("ddpm")),
        help="discrete schedule (default: ddpm-linear, T = 1000)",
    )
    lk.add_argument("--n", type=int, default=2000, help="exact draws (default 2000)")
    lk.add_argument(
        "--variance",
        default="fixed_large",
        choices=["fixed_small", "fixed_large"],
        help="reverse-kernel variance (default fixed_large: beta_n)",
    )
    lk.add_argument("--out", type=Path, default=None, help="folder for the PNG plot")
    lk.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0)
    cf = sub.add_parser(
        "conformance",
        help="check a library's samplers against the reference and exact ground truth",
        description=(
            "diffusers: run every scheduler configuration of the catalogue with the exact "
            "model and print a markdown report: schedule invariants, same-grid agreement with "
            "the reference sampler (tolerance from the scheduler's own float32 precision), "
            "prediction_type invariance, measured orders (tier 1, exact Gaussian), tier-3 "
            "statistics on narrow modes, finiteness over step counts 1..12, and add_noise / "
            "scale_model_input against the forward process; as pipelines run them: as "
            "shipped (float32, half precisions reported, N = 1..50, 100, 250, 1000), the "
            "documented grid, the img2img start, inpainting loops (blend levels, conditional "
            "law) and step's generator; the DDIM inversion as an "
            "inversion, LCM and TCD with the exact consistency model. k-diffusion: its samplers "
            "against "
            "the reference on the same grid (float64), their orders and narrow-mode statistics, "
            "its model wrappers and its sigma schedules. flow_matching / torchcfm: schedulers, "
            "affine paths and conditional flows against closed forms, ODESolver's exact law, "
            "order and same-grid agreement, OT couplings against an exact assignment. Exit "
            "code 1 if any check fails."
        ),
    )
    cf.add_argument("library", choices=["diffusers", "k-diffusion", "flow_matching", "torchcfm"],
                    help="the library to check")  # fmt: skip
    cf.add_argument("--target", default="ring8", choices=sorted(DEFAULT_TARGETS))
    cf.add_argument(
        "--schedulers", default=None, help="comma-separated scheduler class names (default: all)"
    )
    cf.add_argument(
        "--checks",
        type=_checks,
        default=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
        help="comma-separated check numbers 1..12 (default all; 4 (orders), 5 (narrow modes) "
        "and 8 (as shipped, N = 1..50, 100, 250, 1000 in three dtypes) take most of the time)",
    )
    cf.add_argument(
        "--jobs",
        type=_int_at_least(1, "--jobs"),
        default=min(2, os.cpu_count() or 1),
        help="worker processes, one configuration each (default: up to 2)",
    )
    cf.add_argument(
        "--out", type=Path, default=None,
        help="folder for the markdown and JSON reports and their plots",
    )  # fmt: skip
    cf.add_argument(
        "--baseline", type=Path, default=None, metavar="FILE",
        help="known deviations (JSON, validation.checks.baseline): the exit code is 1 only for "
        "FAILs the file does not list (diffusers: the checked-in baseline is "
        "validation/baselines/diffusers.json)",
    )  # fmt: skip
    cf.add_argument(
        "--update-baseline", action="store_true",
        help="write this run's FAILs to --baseline FILE (with their diagnoses) and exit 0",
    )  # fmt: skip
    dv = sub.add_parser(
        "derive",
        help="print a SymPy derivation (checked by the CAS when run)",
        description="Run a derivation of diffusion_oracle.theory: the CAS proves each step, "
        "then the steps are printed as text or LaTeX.",
    )
    dv.add_argument("topic", nargs="?", default=None, help="derivation to print (see --list)")
    dv.add_argument("--list", action="store_true", help="list the topics")
    dv.add_argument("--latex", action="store_true", help="print the expressions as LaTeX")
    sub.add_parser("targets", help="list the built-in targets")
    sub.add_parser("schedules", help="list the built-in schedules and their log-SNR ranges")
    return p


def main(argv=None) -> int:
    """Entry point of the ``diffusion-oracle`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "verify":
        return run_verify(args)
    if args.command == "derive":
        from diffusion_oracle.theory import TOPICS, derive

        if args.list or args.topic is None:
            for name, fn in TOPICS.items():
                print(f"{name:<24} {(fn.__doc__ or '').strip().splitlines()[0]}")
            return 0
        try:
            print(derive(args.topic).text(latex=args.latex))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "ground-truth":
        print(ground_truth(args.target, args.schedule, args.times, args.out, args.seed))
        return 0
    if args.command == "likelihood":
        if args.n < 2:
            print(f"error: --n must be >= 2, got {args.n}", file=sys.stderr)
            return 2
        try:
            text = likelihood_report(
                args.target, args.schedule, args.n, args.variance, args.out, args.seed
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(text)
        return 0
    if args.command == "conformance":
        return run_conformance(args)
    if args.command == "targets":
        for name in sorted(DEFAULT_TARGETS):
            tg = get_target(name)
            doc = (DEFAULT_TARGETS[name].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<10} K={tg.K:<3} d={tg.d:<3} {doc}")
        return 0
    if args.command == "schedules":
        for name in sorted(SCHEDULES):
            sch = get_schedule(name)
            lo, hi = sch.log_snr_range()
            print(f"{name:<22} {sch!r:<60} log-SNR in [{lo:.4g}, {hi:.4g}]")
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2
