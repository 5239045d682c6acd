"""Run by tests/test_version_drift.py in a subprocess whose path holds an older diffusers: the
pipeline-faithful driver on the schedulers every release since 0.21 ships. Prints one JSON
line per scheduler: the label check's verdict, check 8 on N = 1..12, check 10, and whether
the exact run's output law matches the exact law (tier 1 through verify)."""

import json
import logging
import sys
import warnings

warnings.filterwarnings("ignore")
logging.getLogger("diffusers").setLevel(logging.ERROR)

import diffusers  # noqa: E402

from diffusion_oracle import from_diffusers, verify  # noqa: E402
from diffusion_oracle.validation.checks.shipped import check_shipped  # noqa: E402
from diffusion_oracle.validation.checks.usage import check_img2img  # noqa: E402
from diffusion_oracle.validation.conformance import Case  # noqa: E402

CONFIGS = [
    ("DDIMScheduler", {"clip_sample": False}, 1),
    ("EulerDiscreteScheduler", {}, 1),
    ("EulerAncestralDiscreteScheduler", {}, 1),
    ("HeunDiscreteScheduler", {}, 2),
    ("DPMSolverMultistepScheduler", {}, 2),
    ("UniPCMultistepScheduler", {}, None),
    ("LMSDiscreteScheduler", {}, None),
    ("PNDMScheduler", {"skip_prk_steps": True}, None),
    ("DDPMScheduler", {"clip_sample": False}, 1),
]

for name, kw, order in CONFIGS:
    cls = getattr(diffusers, name)
    case = Case(name, kw, order=order)
    out = {"version": diffusers.__version__, "scheduler": name}
    try:
        s = from_diffusers(lambda cls=cls, kw=kw: cls(**kw), order=order, stochastic=None)
        rep = verify(s, "ring8", steps=[8, 16, 32], tiers=(1,), progress=False)
        out["labels"] = rep.check("labels name the sample's level").verdict.value
        out["verify"] = rep.verdict.value
        out["runs"] = rep.check("runs").verdict.value
        out["shipped"] = check_shipped(case, half=False, steps=tuple(range(1, 13))).passed
        out["img2img"] = check_img2img(case).passed
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out), flush=True)
sys.exit(0)
