"""The drift monitoring agent: what changed between a model's reference data and a window of live data, what to
do about it, and the numerical parts of doing it.

Per-column tests miss changes in how columns move together, and a shift in the class prior moves every column's
marginal without making the model wrong, so a window is looked at four ways and the evidence of each is kept
(`detection`, with `performance` for the labelled rows); `decision` turns the evidence into one decision and its
reason; `adaptation` computes what the chosen action needs (a recalibration, a weighted retraining table) and
whether its challenger beats the champion. `reference` holds what they all compare: the data a registered version
was trained and judged on, and the window. Metrics and their direction come from `agents.metrics`.

Nothing is re-exported here: import from the module that does the work.
"""
