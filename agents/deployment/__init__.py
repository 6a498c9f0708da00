"""The deployment agent: what a registered version carries, whether it becomes champion, and how it is served.

- `signature`: the input example a version is registered with, and input conformed to its signature;
- `gate`: the quality gate that decides whether a new version may replace the champion;
- `batch`: a whole file scored by a version (`poise predict`);
- `serving`: the API's champions kept in memory (`ModelServer`);
- `fast_scorer`: the tree scorer that serves bagged LightGBM/CatBoost champions without AutoGluon's
  per-call overhead, and the record of which path each loaded model takes and why;
- `autogluon_internals`: the private AutoGluon and LightGBM attributes that scorer reads, and the
  library versions it was verified with.
"""
