"""Static checks of the container setup: docker/Dockerfile, docker/compose.yaml,
docker/.env.example and .dockerignore. No Docker engine needed.

They catch the drift that breaks a deployment only at `docker compose up`: a service
command naming a CLI option that no longer exists, a `POISE_*` variable that is not a
setting (silently ignored), a compose variable missing from the example env, a literal
secret, torch sneaking into the image, or the image running as root.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer.main
import yaml

from poise.pipelines.cli import app
from poise.pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"postgres", "mlflow", "api", "worker", "scheduler", "ray-head", "ray-worker"}
NAMED_VOLUMES = {"pgdata", "mlartifacts"}
SECRET_NAME = re.compile(r"PASSWORD|KEY|SECRET|TOKEN", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$${` is an escaped `$`.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
WHOLE_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}$")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/:@\s]+:([^@\s]*)@", re.IGNORECASE)
POISE_VARIABLE = re.compile(r"\bPOISE_[A-Z0-9_]+\b")


# ----------------------------------------------------------------------------- helpers


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style interpolation of one string with `env` (the example env file)."""

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if operator in (":-", "-"):
            unset = current is None or (operator == ":-" and current == "")
            return argument if unset else current
        if operator in (":?", "?"):
            missing = current is None or (operator == ":?" and current == "")
            assert not missing, f"required variable {name} is not set: {argument}"
        return current or ""

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def walk_strings(node, path=()):
    """Every string in a YAML tree, with its path (mapping keys included as values' context)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_strings(value, (*path, str(index)))
    elif isinstance(node, str):
        yield path, node


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def as_argv(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, arguments = full.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), arguments
    return argv


def image_defaults() -> tuple[list[str], list[str]]:
    entrypoint = cmd = None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            entrypoint = cmd = None  # a new stage resets both; the last stage counts
        elif keyword == "ENTRYPOINT":
            entrypoint = exec_form(arguments)
        elif keyword == "CMD":
            cmd = exec_form(arguments)
    return entrypoint or [], cmd or []


def effective_argv(service: dict) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's defaults.

    As in Docker, overriding the entrypoint drops the image's CMD.
    """
    image_entrypoint, image_cmd = image_defaults()
    if "entrypoint" in service:
        return as_argv(service["entrypoint"]) + as_argv(service.get("command"))
    return image_entrypoint + (as_argv(service["command"]) if "command" in service else image_cmd)


def is_group(command) -> bool:
    # Duck-typed: Typer 0.29 builds on its own vendored click (`typer._click`), whose
    # classes are not `click.Group`; mlflow's CLI is plain click.
    return isinstance(getattr(command, "commands", None), dict)


def resolve_click_command(root, args: list[str]):
    """Descend through click groups by subcommand names; the leaf, its path and its own args."""
    command, path = root, []
    while is_group(command):
        assert args and not args[0].startswith("-"), f"{' '.join(path) or 'root'}: no subcommand in {args}"
        name, args = args[0], args[1:]
        sub = command.commands.get(name)
        assert sub is not None, f"no subcommand {' '.join([*path, name])!r}; have {sorted(command.commands)}"
        command, path = sub, [*path, name]
    return command, path, args


def check_cli_args(root, program: str, args: list[str]) -> None:
    """The subcommand exists, every --option is one of its parameters, and click accepts the values."""
    command, path, own_args = resolve_click_command(root, args)
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    for arg in own_args:
        if arg.startswith("-") and arg != "-":
            option = arg.split("=", 1)[0]
            assert option in known, (f"`{program} {' '.join(path)}` has no option {option}; "
                                     f"it has {sorted(known)}")
    # Parse (type conversion, ranges, required options) without running the command.
    command.make_context(" ".join([program, *path]), list(own_args), resilient_parsing=False)


def mlflow_cli():
    from mlflow.cli import cli

    return cli


# ----------------------------------------------------------------------------- compose


def test_compose_parses_with_four_services_healthchecks_and_named_volumes():
    spec = compose()
    assert "version" not in spec, "the Compose Specification has no top-level `version:`"
    services = spec["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always"), f"{name}: no restart policy"
    assert NAMED_VOLUMES <= set(spec.get("volumes") or {})
    declared = set(spec["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared top-level"

    def mounts(name: str) -> set[str]:
        return {m for m in services[name].get("volumes", []) if isinstance(m, str)}

    assert "pgdata:/var/lib/postgresql/data" in mounts("postgres")
    assert "mlartifacts:/var/lib/mlflow/artifacts" in mounts("mlflow")
    for name in SERVICES - {"postgres", "mlflow"}:  # Poise's processes share no disk (registry/file_store.py)
        assert not mounts(name), f"{name} mounts {mounts(name)}"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "container_name" not in services["worker"], "a fixed container_name forbids replicas"


def test_compose_startup_order_waits_for_health():
    services = compose()["services"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: cond["condition"] for dep, cond in (services[name].get("depends_on") or {}).items()}

    assert waits_for("mlflow") == {"postgres": "service_healthy"}
    assert waits_for("api") == {"postgres": "service_healthy", "mlflow": "service_healthy"}
    assert waits_for("worker").get("api") == "service_healthy"


def test_compose_publishes_ports_on_loopback_only():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not loopback-only"
    assert "127.0.0.1:8000:8000" in compose()["services"]["api"]["ports"]


def test_postgres_creates_both_databases():
    spec = compose()
    postgres = spec["services"]["postgres"]
    env = environment(postgres)
    assert env["POSTGRES_DB"] == "poise"
    targets = {}
    for entry in postgres.get("configs", []):
        targets[entry["target"]] = spec["configs"][entry["source"]]
    init = [content for target, content in targets.items() if target.startswith("/docker-entrypoint-initdb.d/")]
    assert init, "no init script for the mlflow database"
    assert re.search(r"CREATE\s+DATABASE\s+mlflow\b", init[0]["content"], re.IGNORECASE)
    urls = " ".join(value for service in spec["services"].values() for value in environment(service).values())
    assert "@postgres:5432/poise" in urls and "@postgres:5432/mlflow" in urls


def test_no_literal_secrets_in_compose():
    spec = compose()
    for name, service in spec["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                match = WHOLE_INTERPOLATION.match(value)
                assert match, f"{name}: {key} must come from the environment (${{...}}), not a literal"
                operator, default = match.group(2), match.group(3)
                if operator in (":-", "-"):
                    assert default == "", f"{name}: {key} has a literal default"
    for path, value in walk_strings(spec):
        for match in URL_CREDENTIALS.finditer(value):
            assert WHOLE_INTERPOLATION.match(match.group(1)), (
                f"{'/'.join(path)}: the password in a URL must be a ${{...}} variable")
        assert not re.search(r"PASSWORD\s*'[^']+'", value, re.IGNORECASE), f"{'/'.join(path)}: literal password"
    for match in INTERPOLATION.finditer(COMPOSE.read_text()):
        if SECRET_NAME.search(match.group(1)) and match.group(2) in (":-", "-"):
            assert match.group(3) == "", f"${{{match.group(1)}}} has a literal default"


def test_required_secret_is_required():
    text = COMPOSE.read_text()
    uses = [m for m in INTERPOLATION.finditer(text) if m.group(1) == "POSTGRES_PASSWORD"]
    assert uses and all(m.group(2) == ":?" for m in uses), "POSTGRES_PASSWORD must be ${POSTGRES_PASSWORD:?...}"


def test_env_example_covers_every_compose_variable():
    example = env_example()
    used = {m.group(1): m.group(2) for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    assert used, "compose reads no variables?"
    missing = set(used) - set(example)
    assert not missing, f"docker/.env.example lacks {sorted(missing)}"
    for name, operator in used.items():
        if operator in (":?", "?"):
            assert example[name], f"{name} is required: give it a placeholder in .env.example"
    unused = set(example) - set(used)
    assert not unused, f"docker/.env.example lists variables compose never reads: {sorted(unused)}"


def test_compose_interpolates_with_the_example_env():
    example = env_example()
    for _path, value in walk_strings(compose()):
        interpolate(value, example)  # raises on a required variable left empty


def test_poise_commands_exist_in_the_cli():
    root = typer.main.get_command(app)
    checked = 0
    example = env_example()
    for name, service in compose()["services"].items():
        if service.get("image", "").startswith("postgres"):
            continue
        argv = [interpolate(part, example) for part in effective_argv(service)]
        assert argv, f"{name}: runs nothing"
        if argv[0] == "poise":
            check_cli_args(root, "poise", argv[1:])
            checked += 1
    assert checked >= 3  # api, worker and scheduler


def test_dockerfile_default_command_exists_in_the_cli():
    entrypoint, cmd = image_defaults()
    assert entrypoint == ["poise"]
    assert cmd == ["serve", "--host", "0.0.0.0", "--workers", "0"]
    check_cli_args(typer.main.get_command(app), "poise", cmd)


def test_serve_and_worker_commands():
    services = compose()["services"]
    api = effective_argv(services["api"])
    assert api[:2] == ["poise", "serve"]
    assert api[api.index("--host") + 1] == "0.0.0.0" and api[api.index("--port") + 1] == "8000"
    # Job workers and the scheduler run in their own services: the API container starts none of its own.
    assert api[api.index("--workers") + 1] == "0" and "--no-scheduler" in api
    assert effective_argv(services["worker"])[:2] == ["poise", "worker"]
    assert effective_argv(services["scheduler"]) == ["poise", "scheduler"]
    assert environment(services["scheduler"]) == environment(services["api"])


def test_mlflow_server_command():
    service = compose()["services"]["mlflow"]
    argv = [interpolate(part, env_example()) for part in effective_argv(service)]
    assert argv[:2] == ["mlflow", "server"]
    check_cli_args(mlflow_cli(), "mlflow", argv[1:])

    def value(option: str) -> str:
        return argv[argv.index(option) + 1]

    assert value("--host") == "0.0.0.0" and value("--port") == "5000" and value("--workers") == "1"
    assert "--serve-artifacts" in argv and value("--artifacts-destination") == "/var/lib/mlflow/artifacts"
    allowed = value("--allowed-hosts").split(",")
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000"):  # Host headers of clients and the UI
        assert any(fnmatch.fnmatch(host, pattern) if "*" in pattern else host == pattern for pattern in allowed), host
    env = environment(service)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    backend = env.get("MLFLOW_BACKEND_STORE_URI") or value("--backend-store-uri")
    assert backend.startswith("postgresql+psycopg://") and backend.endswith("@postgres:5432/mlflow")


def test_ray_nodes_run_only_in_the_cluster_profile_and_start_from_the_same_image():
    from ray.scripts.scripts import cli as ray_cli

    services = compose()["services"]
    for name in ("ray-head", "ray-worker"):
        service = services[name]
        assert service.get("profiles") == ["cluster"], f"{name}: must start only with --profile cluster"
        assert service["image"] == services["worker"]["image"]  # Ray, Python and Poise match the drivers
        argv = [interpolate(part, env_example()) for part in effective_argv(service)]
        assert argv[:2] == ["ray", "start"] and "--block" in argv  # --block: the container lives as long as Ray
        check_cli_args(ray_cli, "ray", argv[1:])
        assert "volumes" not in service and service.get("shm_size")
        assert environment(service) == environment(services["worker"])  # the same store, bucket and MLflow
    head = effective_argv(services["ray-head"])
    assert "--head" in head and head[head.index("--port") + 1] == "6379"
    worker = effective_argv(services["ray-worker"])
    assert worker[worker.index("--address") + 1] == "ray-head:6379"
    assert services["ray-worker"]["depends_on"] == {"ray-head": {"condition": "service_healthy"}}
    assert all("profiles" not in services[name] for name in SERVICES - {"ray-head", "ray-worker"})
    # off by default: an empty address keeps every fit in the workers
    assert interpolate(environment(services["worker"])["POISE_RAY_ADDRESS"], env_example()) == ""


def test_api_and_worker_share_settings_and_reach_mlflow():
    services = compose()["services"]
    api, worker = environment(services["api"]), environment(services["worker"])
    assert api == worker
    assert api["POISE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert api["POISE_MLFLOW_REGISTRY_URI"] == "http://mlflow:5000"
    assert api["POISE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api["POISE_HOME"] == "/var/lib/poise"
    # A file: artifact root would be local to whichever container logged the model.
    assert api["POISE_MLFLOW_ARTIFACT_ROOT"].startswith("mlflow-artifacts:")


def test_every_poise_variable_is_a_setting():
    fields = {f"POISE_{name.upper()}" for name in Settings.model_fields}
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        unknown = set(POISE_VARIABLE.findall(path.read_text())) - fields
        assert not unknown, f"{path.relative_to(ROOT)}: not Settings fields: {sorted(unknown)}"


def test_compose_environment_is_valid_settings(monkeypatch):
    """The API's environment, interpolated with the example env, validates as Settings."""
    example = env_example()
    for name in list(os.environ):
        if name.startswith("POISE_"):
            monkeypatch.delenv(name)
    for key, value in environment(compose()["services"]["api"]).items():
        if key.startswith("POISE_"):
            monkeypatch.setenv(key, interpolate(value, example))
    settings = Settings()
    assert str(settings.home) == "/var/lib/poise"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert not settings.llm_configured  # the example leaves the LLM off


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_with_pinned_bases():
    instructions = dockerfile_instructions()
    froms = [arguments.split() for keyword, arguments in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    stages = set()
    for words in froms:
        words = [w for w in words if not w.startswith("--platform")]
        image = words[0]
        if image not in stages:
            tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
            assert tag and tag != "latest" and "$" not in image, f"base image {image!r} is not pinned by tag"
            assert image == "python:3.11-slim-bookworm", image
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
    copies_from_builder = [a for k, a in instructions if k == "COPY" and "--from=" in a]
    assert any("/opt/venv" in a for a in copies_from_builder), "runtime must copy the venv from the builder"


def last_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


def test_dockerfile_runs_as_fixed_non_root_user():
    users = [arguments for keyword, arguments in last_stage() if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the image runs as root"
    runs = " ".join(arguments for keyword, arguments in last_stage() if keyword == "RUN")
    assert "--uid 10001" in runs and (user in ("poise", "10001"))


def test_dockerfile_healthcheck_entrypoint_and_environment():
    stage = last_stage()
    checks = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].split()[:1]
    assert "http://127.0.0.1:8000/healthz" in checks[-1] and "urllib" in checks[-1]
    assert "curl" not in checks[-1] and "wget" not in checks[-1]
    assert any(k == "EXPOSE" and "8000" in a.split() for k, a in stage)
    env_text = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    for setting in ("POISE_HOME=/var/lib/poise", "OMP_WAIT_POLICY=PASSIVE", "GRADIO_ANALYTICS_ENABLED=False",
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false"):
        assert setting in env_text, setting
    assert [a for k, a in stage if k == "WORKDIR"][-1] == "/app"
    runs = " ".join(arguments for keyword, arguments in stage if keyword == "RUN")
    assert "libgomp1" in runs


def test_dockerfile_installs_without_torch_and_without_cache():
    installs = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "RUN":
            for segment in re.split(r"&&|;|\|\|", arguments):
                if re.search(r"\bpip3?\s+install\b", segment):
                    installs.append(segment)
    assert installs
    for segment in installs:
        assert "--no-cache-dir" in segment, f"pip install without --no-cache-dir: {segment.strip()}"
        assert "torch" not in segment.lower(), f"torch installed: {segment.strip()}"
        assert not re.search(r"(^|\s)-e\s|--editable", segment), f"editable install: {segment.strip()}"
        for extras in re.findall(r"\.\[([^\]]*)\]", segment):
            assert "torch" not in extras
    froms = [arguments.lower() for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert not any("cuda" in image for image in froms)


def test_dockerfile_copies_only_existing_unignored_paths():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.replace("**/", ""))
                    or path.startswith(pattern + "/")):
                verdict = not negate
        return verdict

    for keyword, arguments in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from=" not in arguments:
            words = [w for w in arguments.split() if not w.startswith("--")]
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                assert not ignored(source), f"COPY source {source} is excluded by .dockerignore"


def setuptools_table() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def included_packages() -> set[str]:
    """The folders that `pip install .` puts in the wheel (as poise.<folder>)."""
    return set(setuptools_table()["package-dir"].values())


def copied_sources() -> set[str]:
    sources = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from=" not in arguments:
            words = [w for w in arguments.split() if not w.startswith("--")]
            sources.update(w.rstrip("/") for w in words[:-1])
    return sources


def test_dockerfile_copies_every_packaged_package():
    missing = included_packages() - copied_sources()
    assert not missing, f"the builder does not COPY {sorted(missing)} (listed in [tool.setuptools.packages.find])"
    assert {"pyproject.toml", "README.md"} <= copied_sources()  # README.md: the project's `readme`


def test_wheel_contains_every_local_package_the_code_imports():
    """The image installs Poise non-editable: a package imported by the code but missing from [tool.setuptools]
    works in the dev venv and crashes in the image."""
    table = setuptools_table()
    listed = set(table["packages"])
    folders = {f"poise.{dotted}" for folder in included_packages()
               for init in (ROOT / folder).rglob("__init__.py")
               for dotted in [".".join(init.parent.relative_to(ROOT).parts)]}
    assert folders - listed == set(), "subpackages missing from [tool.setuptools] packages"
    imported: dict[str, str] = {}
    for folder in sorted(included_packages()):
        for source in (ROOT / folder).rglob("*.py"):
            for match in re.finditer(r"^\s*(?:from|import)\s+(poise\.[\w.]+)", source.read_text(), re.MULTILINE):
                imported.setdefault(match.group(1), str(source.relative_to(ROOT)))
    missing = {name: where for name, where in imported.items()
               if not any(name == package or name.startswith(package + ".") for package in listed)}
    assert not missing, ("imported but not packaged (add to [tool.setuptools] packages): "
                         + ", ".join(f"{name} (from {where})" for name, where in sorted(missing.items())))


# ----------------------------------------------------------------------------- .dockerignore


def test_dockerignore_keeps_local_state_and_secrets_out():
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".git", ".venv", ".poise", "tests", "**/__pycache__", "**/.env"):
        assert required in patterns, f".dockerignore lacks {required}"
    assert "benchmarks" in patterns or "benchmarks/results" in patterns
    for needed in ("pyproject.toml", "README.md", "agents", "pipelines", "registry"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the build needs"


# ----------------------------------------------------------------------------- docker compose config


def compose_command() -> list[str] | None:
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        probe = subprocess.run([*candidate, "version"], check=False, capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return candidate
    return None


def test_docker_compose_config_accepts_the_file(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed; "
                    "`config` needs no engine, only the CLI")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POISE_", "POSTGRES_", "MLFLOW_"))}
    result = subprocess.run([*command, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
                            check=False, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
