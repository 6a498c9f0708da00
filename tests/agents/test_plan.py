"""The `treat_as_missing` plan operation: schema, folding into job options, the data check, the plan
text, and the LLM tools validating it against a real table."""

import pytest

from poise.agents.errors import PoiseError
from poise.agents.plan import PlanError, check_against_data, describe, parse_plan, plan_options
from poise.agents.tools import PlannerTools, ToolError
from poise.pipelines import runner
from poise.pipelines.access import DataAccess


def _plan(*operations):
    return {"operations": [{"op": "use_data", "path": "d.csv"}, {"op": "set_target", "column": "airbag"},
                           *operations]}


def test_values_meaning_missing_fold_in_order_without_repeats_and_show_in_the_plan():
    options = plan_options(parse_plan(_plan({"op": "treat_as_missing", "values": ["?", "none"]},
                                            {"op": "treat_as_missing", "values": ["none", "-999"]})))
    assert options["na_values"] == ["?", "none", "-999"]
    assert "read as missing: '?', 'none', '-999' (besides the usual empty, NA, null, NaN)" in describe(options)
    assert not any(line.startswith("read as missing") for line in describe(plan_options(parse_plan(_plan()))))


@pytest.mark.parametrize(("values", "problem"), [([], "at least 1 item"), ([""], "at least 1 character"),
                                                 (["a\nb"], "pattern"), (["x"] * 51, "at most 50 items")],
                         ids=["empty-list", "empty-value", "newline", "too-many"])
def test_invalid_values_are_refused_by_the_schema(values, problem):
    with pytest.raises(PlanError, match=problem):
        parse_plan(_plan({"op": "treat_as_missing", "values": values}))


def test_a_class_of_the_target_cannot_be_read_as_missing():
    options = {"data": "d.csv", "target": "airbag", "na_values": ["?", "none"]}
    problems = check_against_data(options, ["airbag", "speed"], {"airbag": 10, "none": 5})
    assert problems == ["na_values: 'none' is a class of 'airbag'; read as missing, its rows would lose their label"]
    assert check_against_data(options, ["airbag", "speed"], {"airbag": 10, "noairbag": 5}) == []


def test_the_llm_tools_validate_the_operation_against_the_table_and_the_job_spec(settings, tmp_path):
    table = tmp_path / "cars.csv"
    table.write_text("speed,belted,airbag\n" + "".join(f"{i},{'none' if i % 3 else 'belted'},"
                                                      f"{'airbag' if i % 4 else 'none'}\n" for i in range(40)))

    def validate(options):
        runner.make_spec(options["data"], options["target"], settings,
                         **{k: v for k, v in options.items() if k not in ("data", "target")})

    tools = PlannerTools(settings, {}, DataAccess.local(), validate)
    operations = [{"op": "use_data", "path": str(table)}, {"op": "set_target", "column": "airbag"}]
    accepted = tools.propose_plan({"operations": [*operations, {"op": "treat_as_missing", "values": ["?", "-1"]}]})
    assert tools.plans[accepted["plan_id"]]["na_values"] == ["?", "-1"]
    assert any(line.startswith("read as missing: '?', '-1'") for line in accepted["plan"])
    spec = runner.make_spec(table, "airbag", settings, na_values=tools.plans[accepted["plan_id"]]["na_values"])
    assert spec.na_values == ["?", "-1"]
    with pytest.raises(ToolError, match="'none' is a class of 'airbag'"):
        tools.propose_plan({"operations": [*operations, {"op": "treat_as_missing", "values": ["none"]}]})
    with pytest.raises(ToolError, match="values"):
        tools.propose_plan({"operations": [*operations, {"op": "treat_as_missing", "values": "?"}]})
    with pytest.raises(PoiseError, match="na_values"):  # JobSpec's own bound, for callers that skip the plan
        runner.make_spec(table, "airbag", settings, na_values=["x"] * 51)


def test_the_label_noise_option_folds_into_the_job_and_shows_in_the_plan():
    options = plan_options(parse_plan(_plan({"op": "set_label_noise", "mode": "downweight"})))
    assert options["label_noise"] == "downweight"
    assert "rows flagged as likely mislabelled: downweight" in describe(options)
    with pytest.raises(PlanError, match="set_label_noise"):
        parse_plan(_plan({"op": "set_label_noise", "mode": "ignore"}))
