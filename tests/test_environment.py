"""environment.yml and pyproject.toml must name the same dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_same_dependencies():
    assert _environment() == _pyproject()


def test_environment_installs_this_package_with_dev_extra():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip
    assert "python=3.11" in env["dependencies"]


def test_lower_bounds_on_fast_moving_libraries():
    deps = _pyproject()
    for name in ("transformers", "trl", "peft", "bitsandbytes"):
        assert ">=" in deps[name], f"{name} needs a lower bound"


def test_package_exports_resolve():
    import rlaifv_lib

    for name in rlaifv_lib.__all__:
        assert getattr(rlaifv_lib, name) is not None, name


def _minimum(spec: str) -> tuple[int, int]:
    """The (major, minor) of a ``>=X.Y[.Z]`` Requires-Python specifier."""
    match = re.search(r">=\s*(\d+)\.(\d+)", spec)
    assert match, f"no lower bound in {spec!r}"
    return int(match.group(1)), int(match.group(2))


def test_python_range_agrees_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = _minimum(project["requires-python"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pinned = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert tuple(int(x) for x in pinned.split("=")[1].split(".")[:2]) >= minimum, pinned
    readme = (ROOT / "README.md").read_text()
    assert f"Python {minimum[0]}.{minimum[1]}+" in readme, "the README's quick start must state the same minimum"
    assert f"Python {minimum[0]}.{minimum[1] - 1}+" not in readme


def test_declared_minimum_python_is_not_below_any_dependency():
    """pip must refuse an interpreter our dependencies cannot install on, before downloading anything.

    Meaningful on the declared minimum Python only: there pip installed the versions that Python can get, while a
    newer interpreter may hold newer releases (numpy 2.5 needs 3.12) that an older one simply does not receive.
    """
    import sys
    from importlib import metadata

    minimum = _minimum(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    if sys.version_info[:2] != minimum:
        pytest.skip(f"run on Python {minimum[0]}.{minimum[1]} (this is {sys.version_info[0]}.{sys.version_info[1]})")
    for name in _pyproject():
        spec = metadata.metadata(name).get("Requires-Python")
        if spec and ">=" in spec:
            assert _minimum(spec) <= minimum, f"{name} {metadata.version(name)} needs Python {spec}; pyproject says >= {minimum}"
