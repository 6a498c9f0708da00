"""One lookup of ids for every client (`registry.queries`) and one table of HTTP statuses (`pipelines.api.errors`):
an id prefix that matches two jobs is refused with both ids, by the CLI and by the API, and an error's kind, not
its wording, decides its status."""

import httpx
import pytest
from poise.agents.errors import (
    AmbiguousId,
    Conflict,
    NoChampion,
    NotFound,
    PoiseError,
    SpecError,
)
from poise.agents.tools import PlannerTools, ToolError
from poise.pipelines.access import DataAccess, Forbidden, NoSuchFile, PathRefused
from poise.pipelines.api.errors import status_of
from poise.pipelines.api.main import create_app
from poise.pipelines.cli import app as cli
from poise.registry import queries
from poise.registry.db import session_scope
from poise.registry.keys import create_key
from poise.registry.models import Job
from typer.testing import CliRunner

TWINS = ("ab12cd34ef56" + "0" * 20, "ab12cd34ef56" + "1" * 20)  # two job ids sharing their first 12 characters


@pytest.fixture
def twins(settings):
    settings.ensure_home()
    with session_scope(settings.db_url) as session:
        for job_id in (*TWINS, "ab%_" + "2" * 28):
            session.add(Job(id=job_id, name="twin", status="failed", spec={"target": "y"}, error="test row"))
    return settings


def test_a_prefix_finds_one_job_and_an_ambiguous_one_names_every_match(twins):
    with session_scope(twins.db_url) as session:
        assert queries.find_job_by_prefix(session, TWINS[0]).id == TWINS[0]  # a whole id
        assert queries.find_job_by_prefix(session, TWINS[1][:13]).id == TWINS[1]  # a unique prefix
        with pytest.raises(AmbiguousId) as ambiguous:
            queries.find_job_by_prefix(session, TWINS[0][:12])
        assert ambiguous.value.matches == list(TWINS) and all(job_id in str(ambiguous.value) for job_id in TWINS)
        with pytest.raises(NotFound, match="no job matches 'ffff'"):
            queries.find_job_by_prefix(session, "ffff")
        with pytest.raises(NotFound):  # LIKE's wildcards are plain characters in a prefix
            queries.find_job_by_prefix(session, "a_1")
        assert queries.find_job_by_prefix(session, "ab%").id.startswith("ab%_")


def test_the_cli_refuses_a_prefix_of_two_jobs_and_lists_both(twins):
    for command in (["show", TWINS[0][:12]], ["resume", TWINS[0][:12]], ["approve", TWINS[0][:12]]):
        outcome = CliRunner().invoke(cli, command)
        assert outcome.exit_code == 2, outcome.output
        assert "matches several jobs" in outcome.output and all(job_id in outcome.output for job_id in TWINS)
        assert "Traceback" not in outcome.output
    shown = CliRunner().invoke(cli, ["show", TWINS[1][:13]])
    assert shown.exit_code == 0 and TWINS[1] in shown.output


def test_the_llm_job_status_tool_refuses_a_prefix_of_two_jobs(twins):
    tools = PlannerTools(twins, {}, DataAccess.local(), lambda spec: None)
    with pytest.raises(ToolError) as refused:  # it used to answer with whichever job came first
        tools.job_status({"job_id": TWINS[0][:12]})
    assert all(job_id in str(refused.value) for job_id in TWINS)
    assert tools.job_status({"job_id": TWINS[1][:13]})["job_id"] == TWINS[1]


def test_the_api_refuses_a_prefix_of_two_jobs_with_both_ids(twins, serve_app):
    key = create_key(twins.db_url, "reader", ["read", "submit"])[1]
    with serve_app(create_app(twins)) as url, httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
        for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events")):
            answer = client.request(method, f"/api/v1/jobs/{TWINS[0][:12]}{path}")
            assert answer.status_code == 400, answer.text
            assert answer.json()["matches"] == list(TWINS) and all(i in answer.json()["detail"] for i in TWINS)
        assert client.get(f"/api/v1/jobs/{TWINS[1][:13]}").json()["id"] == TWINS[1]  # a unique prefix is enough
        assert client.get("/api/v1/jobs/ffff").status_code == 404
        assert client.post(f"/api/v1/jobs/{TWINS[0]}/cancel").status_code == 409  # failed already: a conflict


def test_an_errors_kind_decides_its_status():
    assert {kind: status_of(kind("x")) for kind in (PoiseError, SpecError, NotFound, Conflict, Forbidden,
                                                     PathRefused, NoSuchFile)} == {
        PoiseError: 422, SpecError: 422, NotFound: 404, Conflict: 409, Forbidden: 403, PathRefused: 400,
        NoSuchFile: 404}
    assert status_of(AmbiguousId("x", ["a", "b"])) == 400 and status_of(NoChampion("x")) == 409


def test_predict_without_a_champion_is_a_409_by_the_errors_kind_not_its_words(settings, serve_app):
    """The handler answers NoChampion with 409 and its versions and next steps, whatever its message says."""
    api = create_app(settings)
    steps = [{"text": "promote it", "command": "poise promote m 1 --reason ...", "api": "POST /promote"}]

    def no_champion(name):
        raise NoChampion(f"model '{name}' cannot serve yet", [{"version": "1", "gate": "refused"}], steps)

    api.state.model_server.model = no_champion
    key = create_key(settings.db_url, "predictor", ["predict"])[1]
    with serve_app(api) as url:
        answer = httpx.post(f"{url}/api/v1/models/m/predict", json={"records": [{"a": 1}]},
                            headers={"X-API-Key": key})
    assert answer.status_code == 409, answer.text
    assert answer.json() == {"detail": "model 'm' cannot serve yet", "versions": [{"version": "1", "gate": "refused"}],
                             "next_steps": steps}
