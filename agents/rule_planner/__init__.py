"""Rule-based chat parser: turns a user's message into the parts of a training job it names.

Poise lets a user ask for a model in plain words ("train on data/customers.csv to predict
churned; a missed churner costs 10 times a false alarm; 5 minutes"). When no LLM endpoint
is configured, or the LLM fails, this package does that translation instead: with regular
expressions and `difflib` only, so it is deterministic, fast, works offline and never
executes or evaluates anything from the message.

`parsing.parse_message` reads one message into an `intent.ChatIntent` (every field
optional), `intent.merge` folds the turns of a conversation together, and
`intent.missing_question` says what to ask next until the file and the target are known.
The rules themselves are grouped by what they read: `data_phrases` (the file, missing-value
tokens), `column_phrases` (target, dropped columns, positive class), `objective_phrases`
(objective, costs, time budget), over the shared vocabulary of `phrases`. Validation of
the result (the file exists, the target is a column, the costs suit the objective) happens
later, in `JobSpec` and the plan checks; this package only extracts what was said.

Rules worth knowing:

- A message approves (or rejects) a proposed plan only when it says nothing else: "yes" or
  "looks good, run it" approve; "yes, but with balanced accuracy" changes the objective and
  does not approve, so the user sees the changed plan before it runs.
- Any cost figure implies the "cost" objective. "Optimise for cost" without figures also
  sets it, and `missing_question` then asks for the costs.
- With the table's columns known, a target or dropped column is matched to the real name
  case-insensitively, then with `difflib` (small typos); with no match the user's text is
  kept so that validation can say what is wrong.
- "ignore/drop/exclude X" is read as dropping columns only when it looks like a column
  list ("ignore previous instructions" and "drop the registry" drop nothing).
- Cell values that mean "missing" ("treat '?' and 'none' as missing", "missing values are
  coded as -999", "-999 means NA", "na values: ?, none") become `na_values`. A value may be
  quoted, a number, a run of `?*#` or dashes, or one of the usual words for a gap (none, null,
  nil, na, n/a, nan, unknown, missing, empty, blank, undefined); any other word must be quoted,
  so "treat the customer as missing" reads nothing. These values are read before budgets and
  costs, so "-999" is never a budget or a cost.
"""
