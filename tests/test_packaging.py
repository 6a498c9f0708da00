"""The distribution installs one top-level package, `poise`: its wheel holds nothing else, and installed in a fresh
venv beside the OpenAI Agents SDK (whose import name is `agents`, the name of Poise's folder) both import."""

from __future__ import annotations

import importlib.metadata
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_beside_openai_agents(tmp_path):
    assert importlib.metadata.version("openai-agents")  # a test dependency (pyproject's `test` extra)
    source = tmp_path / "source"  # built from a copy: setuptools leaves a build/ folder where it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("agents", "pipelines", "registry", "ui"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                   check=True, capture_output=True)
    wheel = next(wheels.glob("poise-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"poise", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "poise/registry/migrations/versions/0001_initial.py" in names  # migrations ship with the package
    assert not any(name.startswith("poise/tests/") for name in names)

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    purelib = subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(wheel)],
                   check=True, capture_output=True)
    # The dependencies (openai-agents among them) come from this test environment's site-packages, added as a
    # path: its editable install of Poise is a .pth hook, which a path entry does not run.
    Path(purelib, "dependencies.pth").write_text(site.getsitepackages()[0] + "\n", encoding="utf-8")

    code = ("import agents, poise.agents.plan, poise.pipelines.cli, poise.registry.db\n"
            "assert agents.Agent and agents.Runner  # the OpenAI Agents SDK\n"
            "print(agents.__file__)\nprint(poise.agents.plan.__file__)\nprint(poise.pipelines.cli.app.info.help)")
    run = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    sdk_file, plan_file, cli_help = run.stdout.splitlines()[:3]
    assert plan_file.startswith(purelib) and "poise" not in Path(sdk_file).parts
    assert cli_help.startswith("Poise")
