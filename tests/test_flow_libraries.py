"""flow_matching and torchcfm against exact answers (validation/flow_libraries.py, issue 21).

Expected values come from closed forms written in the module (or SciPy), never from the packages;
each family of checks has a planted fault that must fail."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flow_matching")
pytest.importorskip("torchcfm")
torch = pytest.importorskip("torch")

from diffusion_oracle.validation import flow_libraries as F  # noqa: E402
from diffusion_oracle.validation.conformance import CheckResult  # noqa: E402


def _ok(rows):
    return all(r.passed is not False for r in rows) and any(r.passed for r in rows)


# ------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("package", ["flow_matching", "torchcfm"])
def test_every_export_is_catalogued_or_listed_with_a_reason(package):
    exported = F.exported_classes(package)
    assert exported, f"{package} exports no classes?"
    have = F._catalogued_names()
    missing = F.not_catalogued(package)
    assert set(missing) | (have & set(exported)) == set(exported)
    unexplained = {n: w for n, w in missing.items() if w == "no reason recorded"}
    assert not unexplained, f"exported but neither catalogued nor listed: {sorted(unexplained)}"
    # nothing stale: every catalogued and every listed name is exported by the installed release
    pkg_have = {n for n in have if n.startswith(package)}
    assert pkg_have <= set(exported), sorted(pkg_have - set(exported))
    listed = {n for n in F.NOT_CATALOGUED if n.startswith(package)}
    assert listed <= set(exported), sorted(listed - set(exported))


def test_unresolvable_export_is_reported():
    # flow_matching 1.0.10 lists ModelWrapper in flow_matching.solver.__all__ without defining it
    missing = F.not_catalogued("flow_matching")
    for name, obj in F.exported_classes("flow_matching").items():
        if obj is None:
            assert "not defined" in missing[name]


def test_every_case_is_a_catalogued_class():
    names = F._catalogued_names()
    assert {c[2] for c in F.conformance_cases()} <= names
    assert {c[2] for c in F.conformance_cases()} >= names - {"torchcfm.OTPlanSampler"}


# ------------------------------------------------------------------- closed forms themselves
@pytest.mark.parametrize("name", list(F.FM_SCHEDULERS))
def test_closed_form_derivatives_match_central_differences(name):
    # the module's analytic derivatives against its own values (independent of the package)
    t = np.linspace(0.05, 0.95, 19)
    h = 1e-6
    a, s, da, ds = F.scheduler_closed_form(name, t)
    ap, sp, _, _ = F.scheduler_closed_form(name, t + h)
    am, sm, _, _ = F.scheduler_closed_form(name, t - h)
    np.testing.assert_allclose(da, (ap - am) / (2 * h), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(ds, (sp - sm) / (2 * h), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(F.CFM_MATCHERS))
def test_cfm_closed_form_derivatives_match_central_differences(name):
    g = np.random.default_rng(1)
    x0, x1 = g.standard_normal((7, 2)), g.standard_normal((7, 2))
    t, h = np.linspace(0.1, 0.9, 7), 1e-6
    mu, st, dmu, dst = F.cfm_closed_form(name, x0, x1, t, 0.3)
    mup, sp, _, _ = F.cfm_closed_form(name, x0, x1, t + h, 0.3)
    mum, sm, _, _ = F.cfm_closed_form(name, x0, x1, t - h, 0.3)
    np.testing.assert_allclose(dmu, (mup - mum) / (2 * h), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dst, (sp - sm) / (2 * h), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------- flow_matching paths
@pytest.mark.parametrize("name", list(F.FM_SCHEDULERS))
def test_schedulers_and_affine_paths_match_closed_forms(name):
    rows = F.check_fm_scheduler(name) + F.check_fm_affine_path(name)
    assert all(isinstance(r, CheckResult) for r in rows)
    assert all(r.passed for r in rows), [(r.name, r.detail) for r in rows if not r.passed]


class _WrongDSigma:
    """CondOT with d_sigma off by 0.1% (a planted fault)."""

    def __init__(self):
        from flow_matching.path.scheduler import CondOTScheduler

        self.inner = CondOTScheduler()

    def __call__(self, t):
        o = self.inner(t)
        o.d_sigma_t = o.d_sigma_t * 1.001
        return o

    def kappa_inverse(self, kappa):
        return self.inner.kappa_inverse(kappa)


def test_planted_scheduler_fault_fails():
    rows = {r.name: r for r in F.check_fm_scheduler("CondOTScheduler", _WrongDSigma())}
    assert rows["d_sigma_t (closed form)"].passed is False
    assert rows["alpha_t (closed form)"].passed is True
    from flow_matching.path import AffineProbPath

    rows = F.check_fm_affine_path("CondOTScheduler", path=AffineProbPath(_WrongDSigma()))
    assert rows[0].passed is False  # dx_t off


@pytest.mark.parametrize("new", ["CosineScheduler", "VPScheduler"])
def test_schedule_transform_matches_the_exact_velocity(new):
    (row,) = F.check_fm_schedule_transform(new)
    assert row.passed, row.detail


def test_planted_schedule_transform_fault_fails():
    from flow_matching.path.scheduler import (
        CondOTScheduler,
        LinearVPScheduler,
        ScheduleTransformedModel,
    )

    from diffusion_oracle.reference import get_target

    wrong = ScheduleTransformedModel(F._ExactVelocity(get_target("ring8")), CondOTScheduler(),
                                     LinearVPScheduler())  # fmt: skip
    (row,) = F.check_fm_schedule_transform("CosineScheduler", transformed=wrong)
    assert row.passed is False


# ----------------------------------------------------------------------------- ODESolver
@pytest.mark.parametrize(
    "method,scheduler",
    [("euler", "CondOTScheduler"), ("midpoint", "CondOTScheduler"), ("rk4", "CondOTScheduler"),
     ("euler", "VPScheduler"), ("midpoint", "CosineScheduler")],
)  # fmt: skip
def test_ode_solver_exact_law_same_grid_and_order(method, scheduler):
    rows = F.check_fm_ode_solver(method, scheduler)
    assert all(r.passed for r in rows), [(r.name, r.detail) for r in rows if not r.passed]
    order = next(r for r in rows if r.name.startswith("order"))
    declared = F.FM_METHODS[method][0]
    assert order.value >= declared - 0.2


def _drop_last_step():
    from flow_matching.solver import ODESolver

    class DropLast(ODESolver):
        """Planted fault: integrates to the second-to-last time of the grid."""

        def sample(self, x_init, step_size, time_grid, **kw):
            if step_size is None:
                time_grid = time_grid[:-1]
            else:
                time_grid = torch.stack([time_grid[0], time_grid[-1] - step_size])
            return super().sample(x_init=x_init, step_size=step_size, time_grid=time_grid, **kw)

    return DropLast


def test_planted_solver_fault_fails():
    rows = {r.name.split(" (")[0]: r for r in
            F.check_fm_ode_solver("midpoint", "CondOTScheduler", solver_cls=_drop_last_step())}
    assert rows["same grid as the Butcher tableau"].passed is False
    assert rows["step_size = 1/N on [t0, t1]"].passed is False
    assert rows["order"].passed is False  # W2 stalls at the law one step short of the end


def test_verify_euler_on_ring8_passes():
    (row,) = F.check_fm_solver_verify("euler", steps=(16, 32, 64), tiers=(1, 2),
                                      seed=0)  # fmt: skip
    assert row.passed, row.detail


def test_verify_planted_fault_fails():
    (row,) = F.check_fm_solver_verify("euler", steps=(16, 32, 64), tiers=(1,),
                                      solver_cls=_drop_last_step())  # fmt: skip
    assert row.passed is False, row.detail


# ------------------------------------------------------------------------------- torchcfm
@pytest.mark.parametrize("name", list(F.CFM_MATCHERS))
def test_cfm_matchers_match_closed_forms(name):
    rows = F.check_cfm_matcher(name)
    assert all(r.passed for r in rows), [(r.name, r.detail) for r in rows if not r.passed]


def test_sb_regulariser_is_measured():
    rows = F.check_cfm_matcher("SchrodingerBridgeConditionalFlowMatcher")
    flow = next(r for r in rows if r.name.startswith("compute_conditional_flow"))
    # the deviation from the closed form is the +1e-8 regulariser: of order 1e-8 / (2 t (1 - t))
    # at t = 0.01, relative to the velocity scale
    assert 1e-8 < flow.value < 1e-6


def test_planted_cfm_faults_fail():
    import torchcfm

    class SwappedVP(torchcfm.VariancePreservingConditionalFlowMatcher):
        def compute_conditional_flow(self, x0, x1, t, xt):
            return -super().compute_conditional_flow(x1, x0, t, xt)  # x0 and x1 exchanged

    rows = F.check_cfm_matcher("VariancePreservingConditionalFlowMatcher",
                               matcher=SwappedVP(sigma=0.1))  # fmt: skip
    assert any(r.passed is False for r in rows)

    class ScaledU(torchcfm.ConditionalFlowMatcher):
        def compute_conditional_flow(self, x0, x1, t, xt):
            return 1.000001 * (x1 - x0)

    rows = {r.name.split(" =")[0]: r for r in
            F.check_cfm_matcher("ConditionalFlowMatcher", matcher=ScaledU(sigma=0.1))}
    assert rows["compute_conditional_flow"].passed is False


def test_ot_plan_against_exact_assignment():
    rows = F.check_cfm_ot_plan()
    assert all(r.passed for r in rows), [(r.name, r.detail) for r in rows if not r.passed]


def test_planted_ot_fault_fails():
    class RandomPlan:
        """Planted fault: a random permutation instead of the optimal one."""

        def get_map(self, x0, x1):
            n = x0.shape[0]
            p = np.zeros((n, n))
            p[np.arange(n), np.random.default_rng(3).permutation(n)] = 1.0 / n
            return p

        def sample_plan(self, x0, x1):
            i = np.random.default_rng(4).permutation(x0.shape[0])
            return x0, x1[i]

    rows = F.check_cfm_ot_plan(plan_sampler=RandomPlan())
    assert rows[0].passed is False and rows[1].passed is False


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call,arg",
    [(lambda: F.scheduler_closed_form("Nope", 0.5), "name"),
     (lambda: F.scheduler_closed_form("CondOTScheduler", 1.5), "t"),
     (lambda: F.scheduler_closed_form("PolynomialConvexScheduler", 0.5, n=-1.0), "n"),
     (lambda: F.check_fm_ode_solver("bogus"), "method"),
     (lambda: F.check_fm_ode_solver("euler", "bogus"), "scheduler"),
     (lambda: F.check_fm_ode_solver("euler", steps=(8,)), "steps"),
     (lambda: F.cfm_closed_form("Nope", [[0.0]], [[0.0]], [0.5], 0.1), "name"),
     (lambda: F.version("numpy"), "package"),
     (lambda: F.exported_classes("numpy"), "package"),
     (lambda: F.FlowMatchingSampler("bogus"), "method"),
     (lambda: F.FlowMatchingSampler("euler", t_end=0.0), "t_end")],
)  # fmt: skip
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


# --------------------------------------------------------------------------------- report
def test_report_lists_rows_and_the_not_catalogued():
    md, rows = F.conformance_report(("torchcfm",), progress=False, verify_rows=False)
    assert "# torchcfm" in md and "Not catalogued" in md and "OTPlanSampler" in md
    assert rows and all(isinstance(c, CheckResult) for _, res in rows for c in res)
    assert "FAIL" not in md.split("Not catalogued")[0]
