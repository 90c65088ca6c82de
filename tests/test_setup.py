"""setup/check_env.py: the workshop environment check runs, and names too-old or missing packages plainly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "setup" / "check_env.py"


def _module():
    spec = importlib.util.spec_from_file_location("check_env", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_check_env_runs_and_passes_here():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("OK    torch", "toy policy loaded", "PairInspector rendered", "figure rendered to PNG", "All set"):
        assert line in out.stdout, out.stdout


def test_too_old_and_missing_packages_are_named():
    mod = _module()
    report = dict((msg.split()[0], (status, msg)) for status, msg in mod.check_versions(["torch>=999", "no-such-package-xyz>=1", "numpy>=1.0"]))
    assert report["torch"][0] == "FAIL" and "too old" in report["torch"][1] and ">=999" in report["torch"][1]
    assert report["no-such-package-xyz"][0] == "FAIL" and "not installed" in report["no-such-package-xyz"][1]
    assert report["numpy"][0] == "OK"


def test_python_version_outside_the_range_fails():
    mod = _module()
    assert mod.check_python(">=3.11")[0] == "OK"
    status, msg = mod.check_python(">=99")
    assert status == "FAIL" and "needs Python >=99" in msg
