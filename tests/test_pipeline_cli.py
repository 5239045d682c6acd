"""`diffusion-oracle verify` reproduces a pipeline's call (issue 20): 'diffusers:<Class>' (or a
user's subclass as 'module:Class') with --config / --set-timesteps / --step-kwargs / --strength /
--begin-index / --dtype / --inverse, and 'k-diffusion:<sample_fn>' on a model wrapper. Exit
codes: 0 PASS, 1 FAIL, 2 usage error, 3 INCONCLUSIVE."""

from __future__ import annotations

import json
import textwrap

import pytest

pytest.importorskip("diffusers")
# diffusers 0.42.1 builds its sigma tables through np.array(tensor): a DeprecationWarning per
# call under NumPy 2, hundreds of thousands of lines in the log
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
pytest.importorskip("torch")

from diffusion_oracle.cli import main  # noqa: E402


def _run(tmp_path, argv):
    out = tmp_path / "report.json"
    code = main(["verify", *argv, "--tiers", "1", "--steps", "8,16,32", "--out", "",
                 "--json", str(out)])  # fmt: skip
    return code, (json.loads(out.read_text()) if out.exists() else None)


def _check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


def test_a_diffusers_scheduler_with_its_pipeline_arguments(tmp_path):
    code, rep = _run(tmp_path, ["diffusers:EulerDiscreteScheduler", "--config",
                                '{"use_karras_sigmas": true}', "--order", "1"])  # fmt: skip
    assert code == 0, rep
    assert _check(rep, "labels name the sample's level")["verdict"] == "PASS"
    assert rep["dtype"] == "float32" and rep["schedule"].startswith("DiscreteSchedule")


def test_custom_timesteps_and_strength_reach_the_scheduler(tmp_path):
    """Custom timesteps fix the run's labels (the step count comes from them) and strength
    starts the run part-way: Euler with timesteps [999, 749, 499, 249] and strength 0.5 runs
    from label 499 (diffusers' img2img get_timesteps: the last int(4 * 0.5) = 2 of them)."""
    from diffusion_oracle.cli import _pipeline_sampler, build_parser

    args = build_parser().parse_args(
        ["verify", "diffusers:EulerDiscreteScheduler", "--set-timesteps",
         '{"timesteps": [999, 749, 499, 249]}', "--strength", "0.5"])  # fmt: skip
    s = _pipeline_sampler(args)
    tr = s.trace(s.schedule, 4)
    assert tr.labels == [499.0, 249.0]


class_src = textwrap.dedent('''
    import diffusers

    class Repeating(diffusers.EulerDiscreteScheduler):
        """A planted fault: the second label repeated (the network told the old level)."""

        def set_timesteps(self, *args, **kwargs):
            super().set_timesteps(*args, **kwargs)
            self.timesteps[2] = self.timesteps[1]
''')


def test_a_users_subclass_runs_through_the_pipeline_route(tmp_path, monkeypatch):
    (tmp_path / "my_sched.py").write_text(class_src)
    monkeypatch.chdir(tmp_path)
    code, rep = _run(tmp_path, ["my_sched:Repeating", "--order", "1"])
    assert code == 1
    row = _check(rep, "labels name the sample's level")
    assert row["verdict"] == "FAIL" and "label repeated at calls [2]" in row["reason"]


def test_an_inversion_and_a_k_diffusion_sampler(tmp_path):
    code, rep = _run(tmp_path, ["diffusers:DDIMInverseScheduler", "--config",
                                '{"clip_sample": false}', "--inverse", "--reference", "ddim",
                                "--order", "1"])  # fmt: skip
    assert code == 0, rep
    assert _check(rep, "same levels as the DDIM inversion")["verdict"] == "PASS"
    pytest.importorskip("torchsde")
    code, rep = _run(tmp_path, ["k-diffusion:sample_heun", "--wrapper", "CompVisVDenoiser",
                                "--order", "2", "--no-quantize"])  # fmt: skip
    assert code == 0, rep
    assert _check(rep, "labels name the sample's level")["verdict"] == "PASS"
    assert "on CompVisVDenoiser" in rep["sampler"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["diffusers:NoSuchScheduler"], "diffusers has no scheduler class"),
        (["diffusers:DDIMScheduler", "--strength", "1.5"], "strength must lie in (0, 1]"),
    ],
)
def test_bad_pipeline_arguments_are_usage_errors(tmp_path, capsys, argv, message):
    code, _ = _run(tmp_path, argv)
    assert code == 2 and message in capsys.readouterr().err


def test_an_empty_out_writes_no_plots(tmp_path, monkeypatch):
    """--out '' means no plots (it wrote PNGs into the working folder: Path('') is '.')."""
    monkeypatch.chdir(tmp_path)
    code, _ = _run(tmp_path, ["diffusers:EulerDiscreteScheduler", "--order", "1"])
    assert code == 0 and not list(tmp_path.glob("*.png"))


def test_a_bad_json_argument_is_named(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "diffusers:DDIMScheduler", "--config", "[1, 2]"])
    assert e.value.code == 2 and "expected a JSON object" in capsys.readouterr().err
