"""environment.yml carries exactly the pins of pyproject.toml (conda users get the same versions)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"]}
    for extra in ("server", "test"):
        wanted |= {_norm(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_norm(r) for r in pip if not r.startswith("-e")}
    assert wanted - have == set(), f"missing from environment.yml: {sorted(wanted - have)}"
    assert have - wanted == set(), f"not in pyproject.toml: {sorted(have - wanted)}"


def test_torch_is_pinned_to_the_cpu_wheel_release():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
