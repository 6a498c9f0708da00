"""One job spec: the CLI, the API, the plan operations (the LLM's tool schema) and the suggested next steps all take
every option of `JobOptions` / `CheckOptions`, under the same name, type and default."""

from __future__ import annotations

import typer.main

from poise.agents.job_spec import CheckOptions, JobOptions, train_arguments
from poise.agents.plan import JobPlan, parse_plan, plan_options
from poise.pipelines.api.routes.checks import CheckRequest
from poise.pipelines.api.routes.jobs import JobRequest
from poise.pipelines.cli import app

EVERY_OPTION = {
    "target": "churned", "name": "churn-model", "objective": "cost", "cost_fn": 10.0, "cost_fp": 1.5,
    "positive_class": "yes", "time_limit": 120, "presets": "good_quality", "na_values": ["?", "none"],
    "drop_columns": ["id", "signup date"], "keep_columns": ["plan"], "excluded_model_types": ["KNN", "NN_TORCH"],
    "threshold_policy": "default", "label_noise": "downweight", "require_approval": True,
}


def _cli_params(command: str, arguments: list[str]) -> dict:
    click_command = typer.main.get_command(app).commands[command]
    return click_command.make_context(command, arguments).params


def test_the_example_sets_every_option():
    assert set(EVERY_OPTION) == set(JobOptions.model_fields)
    assert JobOptions.model_validate(EVERY_OPTION).model_dump() == EVERY_OPTION


def test_train_flags_round_trip_every_option():
    arguments = ["customers.csv", *train_arguments(EVERY_OPTION)]
    params = _cli_params("train", arguments)
    given = {name: value.value if hasattr(value, "value") else value for name, value in params.items()
             if name in JobOptions.model_fields}
    given = {name: [item.value if hasattr(item, "value") else item for item in value] if isinstance(value, list)
             else value for name, value in given.items()}
    assert JobOptions.model_validate(given).model_dump() == EVERY_OPTION


def test_train_leaves_unset_options_to_the_spec_defaults():
    params = _cli_params("train", ["customers.csv", "-t", "churned"])
    unset = {name for name, value in params.items() if not value}
    assert unset >= set(JobOptions.model_fields) - {"target"}
    assert JobOptions.model_fields["objective"].default == "f1"  # the default lives in the spec, not the CLI


def test_api_request_takes_every_option_with_the_spec_schema():
    request = JobRequest.model_json_schema()["properties"]
    options = JobOptions.model_json_schema()["properties"]
    assert {name: request[name] for name in options} == options
    checks = CheckRequest.model_json_schema()["properties"]
    assert {name: checks[name] for name in CheckOptions.model_json_schema()["properties"]} == \
        CheckOptions.model_json_schema()["properties"]


def test_monitor_flags_cover_every_check_option():
    params = _cli_params("monitor", ["churn-model"])
    assert set(CheckOptions.model_fields) <= set(params)


def test_a_plan_can_set_every_option():
    plan = parse_plan({"operations": [
        {"op": "use_data", "path": "customers.csv"},
        {"op": "set_target", "column": "churned"},
        {"op": "set_name", "name": "churn-model"},
        {"op": "set_objective", "objective": "cost", "cost_fn": 10, "cost_fp": 1.5},
        {"op": "set_positive_class", "label": "yes"},
        {"op": "set_time_budget", "seconds": 120},
        {"op": "set_presets", "presets": "good_quality"},
        {"op": "treat_as_missing", "values": ["?", "none"]},
        {"op": "drop_columns", "columns": ["id"]},
        {"op": "treat_as_leak", "column": "signup date"},
        {"op": "keep_columns", "columns": ["plan"]},
        {"op": "exclude_models", "model_types": ["KNN", "NN_TORCH"]},
        {"op": "set_threshold_policy", "policy": "default"},
        {"op": "set_label_noise", "mode": "downweight"},
        {"op": "require_approval", "required": True},
    ]})
    options = plan_options(plan)
    assert options.pop("data") == "customers.csv"
    assert JobOptions.model_validate(options).model_dump() == EVERY_OPTION


def test_plan_operations_refuse_what_the_spec_refuses():
    schema = JobPlan.model_json_schema()
    text = str(schema)
    for value in ("best_quality", "NN_TORCH", "balanced_accuracy"):
        assert value in text  # the choices come from the spec
    for bad in ({"op": "set_time_budget", "seconds": 1}, {"op": "set_presets", "presets": "extreme"},
                {"op": "exclude_models", "model_types": ["SVM"]}, {"op": "set_name", "name": "../x"}):
        try:
            parse_plan({"operations": [bad]})
        except Exception as error:  # PlanError
            assert bad["op"] in str(error) or "operations" in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
        try:
            key = {"set_time_budget": "time_limit", "set_presets": "presets", "exclude_models": "excluded_model_types",
                   "set_name": "name"}[bad["op"]]
            value = next(v for k, v in bad.items() if k != "op")
            JobOptions.model_validate({"target": "y", key: value})
        except Exception:
            pass
        else:
            raise AssertionError(f"JobOptions accepted {key}={value!r} that the plan refuses")


def test_chat_phrases_set_spec_options_under_their_names():
    from poise.agents.rule_planner.intent import ChatIntent

    own = {"data", "approve", "reject"}  # the file, and the answers to a proposed plan
    assert set(ChatIntent.model_fields) - own <= set(JobOptions.model_fields)
    assert ChatIntent.model_fields["objective"].annotation == JobOptions.model_fields["objective"].annotation | None
