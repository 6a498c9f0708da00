"""What the web UI shows for a version the quality gate refused (the values its components get, from a
real job: `ui.views` holds everything the page shows, the Gradio wiring adds nothing)."""

import pytest

from poise.pipelines import runner
from poise.registry import tracking
from poise.ui import views


@pytest.mark.slow
def test_a_refused_gate_shows_why_and_the_next_steps_until_someone_promotes_with_a_reason(settings, tmp_path, noise_table):
    data = tmp_path / "noise.csv"
    noise_table().to_csv(data, index=False)  # no signal: with a false alarm at 50 misses the model flags nobody
    result = runner.train(data, "outcome", name="noisy-ui", objective="cost", cost_fn=1, cost_fp=50, time_limit=10,
                          settings=settings)
    assert result.status == "succeeded" and result.gate["passed"] is False  # the gate really refused

    view = views.job_view(settings, runner.find_job(settings, result.job_id))
    assert "(not champion)" in view.details and "**Quality gate** refused: expected\\_cost" in view.details
    assert views.plain("No version of 'noisy-ui' is champion") in view.details
    assert "**Next steps**" in view.details
    for command in ("poise predict noisy-ui NEW_DATA.csv --out predictions.csv --version 1",
                    "poise promote noisy-ui 1 --reason"):
        assert views.plain(command) in view.details  # escaped like every text from users or their data
        assert command in view.summary
    (note,) = views.models_table(settings)["champion note"]
    assert note.startswith("no champion (the gate refused every version)") and "poise promote noisy-ui 1" in note

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    tracking.promote(client, "noisy-ui", "1", reason="pilot <b>only</b>", by="cli:ana")
    view = views.job_view(settings, runner.find_job(settings, result.job_id))
    assert "(champion)" in view.details and "**Next steps**" not in view.details
    assert views.plain("The gate refused v1, but it was promoted by hand by cli:ana") in view.details
    assert views.plain("pilot <b>only</b>") in view.details and "<b>" not in view.details
    (note,) = views.models_table(settings)["champion note"]
    assert note == "promoted by hand by cli:ana: pilot <b>only</b>"  # a Dataframe cell shows text as is
