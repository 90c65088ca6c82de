"""Check a workshop machine in under a minute: package versions, the toy policy, one widget, one figure.

Run ``python setup/check_env.py`` from the repository root (or anywhere, once ``pip install -e .`` has
run). Each line says OK, WARN or FAIL in plain words; the exit status is 1 when something must be fixed
before the first notebook, 0 otherwise. The required versions are read from the installed package's
own metadata (``pyproject.toml``), so this script never carries a second copy of them.
"""

from __future__ import annotations

import io
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, metadata, requires, version
from typing import Callable

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

PACKAGE = "rlaifv-lib"


def check_python(spec: str | None = None) -> tuple[str, str]:
    """(status, message) for the running Python against the package's ``Requires-Python``."""
    spec = spec if spec is not None else metadata(PACKAGE).get("Requires-Python", "")
    here = platform.python_version()
    if SpecifierSet(spec).contains(here):
        return "OK", f"Python {here} (needs {spec})"
    return "FAIL", f"Python {here} is too old or too new: this tutorial needs Python {spec}. Install a matching Python (setup/README.md)."


def check_versions(reqs: list[str] | None = None) -> list[tuple[str, str]]:
    """(status, message) per required package: OK, too old, or missing."""
    reqs = reqs if reqs is not None else [r for r in requires(PACKAGE) or [] if "extra ==" not in r]
    out = []
    for line in reqs:
        req = Requirement(line)
        try:
            have = version(req.name)
        except PackageNotFoundError:
            out.append(("FAIL", f"{req.name} is not installed (needs {req.specifier}). Run: pip install -e ."))
            continue
        if req.specifier.contains(Version(have), prereleases=True):
            out.append(("OK", f"{req.name} {have}"))
        else:
            out.append(("FAIL", f"{req.name} {have} is too old (needs {req.specifier}). Run: pip install -U '{req.name}{req.specifier}'"))
    return out


def check_policy() -> tuple[str, str]:
    """Load the toy policy and ask it one yes/no question about one toy image."""
    from rlaifv_lib.feedback import yes_no_probs
    from rlaifv_lib.models import load_model
    from rlaifv_lib.toyworld import evaluation_scenes, existence_question, render_scene

    model, processor = load_model("toy-policy")
    scene = evaluation_scenes(1)[0]
    (p_yes, p_no), = yes_no_probs(model, processor, [render_scene(scene)], [existence_question(sorted(scene.shapes)[0])])
    n = sum(p.numel() for p in model.parameters())
    return "OK", f"toy policy loaded ({n / 1e6:.2f}M parameters) and answered a question (P(yes) {p_yes:.2f}, P(no) {p_no:.2f})"


def check_widget() -> tuple[str, str]:
    """Build one PairInspector and check its HTML has the parts a learner sees."""
    from rlaifv_lib.records import PreferencePair
    from rlaifv_lib.toyworld import describe, evaluation_scenes, render_scene
    from rlaifv_lib.widgets import PairInspector

    scene = evaluation_scenes(1)[0]
    pair = PreferencePair(scene.id, describe(scene), describe(scene) + " there is a small red star at the top .", 1.0, f"{scene.id}/c0", f"{scene.id}/c1", 0.0, -1.0, "describe the image .")
    shown = PairInspector([pair], images={scene.id: render_scene(scene)}, scenes={scene.id: scene}).html
    missing = [part for part in ("rlaifv-chosen", "rlaifv-rejected", "rlaifv-claim-truth") if part not in shown]
    if missing:
        return "FAIL", f"the PairInspector widget rendered without {missing}: reinstall ipywidgets>=8 and rlaifv-lib (pip install -e .)"
    return "OK", "ipywidgets: a PairInspector rendered (in Jupyter, widgets also need the JupyterLab widget manager, part of ipywidgets 8)"


def check_figure() -> tuple[str, str]:
    """Draw one figure with the tutorial's plotting helpers and encode it as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from rlaifv_lib.plots import before_after_bars

    fig = before_after_bars({"chair_i": 0.2, "coverage": 0.9}, {"chair_i": 0.1, "coverage": 0.88}, keys=["chair_i", "coverage"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    if not buf.getvalue().startswith(b"\x89PNG"):
        return "FAIL", "matplotlib did not produce a PNG image; reinstall matplotlib"
    return "OK", f"matplotlib {matplotlib.__version__}: a figure rendered to PNG ({len(buf.getvalue()) // 1024} KiB)"


def check_accelerators() -> list[tuple[str, str]]:
    """What will run where: CUDA for the real-model notebook, 4-bit NF4 for QLoRA (else the full-precision fallback)."""
    import torch

    out = [("OK", f"GPU: {torch.cuda.get_device_name(0)}") if torch.cuda.is_available() else
           ("OK", "no CUDA GPU: fine for notebooks 00-07 (toy world on the CPU); notebook 08 then runs tiny stand-ins")]  # fmt: skip
    try:
        from rlaifv_lib.models import bnb_available  # where the bitsandbytes probe lives after the model-code move
    except ImportError:
        from rlaifv_lib.dpo import bnb_available
    if bnb_available():
        out.append(("OK", "bitsandbytes: 4-bit NF4 works here (QLoRA as in notebook 05)"))
    else:
        out.append(("WARN", "bitsandbytes cannot run 4-bit here: notebook 05 trains the same LoRA adapters on a full-precision base "
                            "(same loss, more memory). Nothing to fix for the workshop."))  # fmt: skip
    return out


def _run(name: str, check: Callable[[], tuple[str, str] | list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Run one check; an exception becomes a FAIL line naming the check and the error."""
    try:
        result = check()
    except Exception as e:  # the point of this script is to report any problem in plain words
        return [("FAIL", f"{name}: {type(e).__name__}: {e}")]
    return result if isinstance(result, list) else [result]


def main() -> int:
    """Print every check; 1 when one failed."""
    start = time.perf_counter()
    try:
        version(PACKAGE)
    except PackageNotFoundError:
        print(f"FAIL  {PACKAGE} is not installed. From the repository root run: pip install -e .")
        return 1
    lines = [check_python()] + check_versions()
    for name, check in (("toy policy", check_policy), ("widget", check_widget), ("figure", check_figure), ("accelerators", check_accelerators)):
        lines += _run(name, check)
    for status, message in lines:
        print(f"{status:5} {message}")
    failed = sum(s == "FAIL" for s, _ in lines)
    print(f"\n{'All set' if not failed else f'{failed} problem(s) to fix first (see FAIL above)'} — checked in {time.perf_counter() - start:.0f} s.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
