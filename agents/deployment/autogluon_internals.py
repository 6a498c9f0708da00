"""The one place Poise reads private attributes of AutoGluon and LightGBM, and the versions they were checked with.

The fast tree scorer (`agents.deployment.fast_scorer`) replays AutoGluon's prediction arithmetic, which needs
things neither library publishes. Each private attribute is read through a function here, so that a rename
in a new release shows up as one named fallback ("private attribute `TabularPredictor._trainer` is missing")
when a model is loaded, never as an AttributeError in the middle of a request:

- `TabularPredictor._trainer`: the trainer, which loads the best model and its fold models by name;
- `TabularPredictor._learner`: the learner, whose feature transform the scorer calls;
- `learner._post_process_predict_proba`: AutoGluon's own class order and label decoding of probabilities;
- `LGBModel._requires_remap`: whether AutoGluon renames columns before LightGBM sees them (then no fast path);
- `CatBoostModel._category_features`: the columns CatBoost encodes itself (then no fast path);
- `AbstractModel._is_features_in_same_as_ex` and `AbstractModel._features_internal_to_align`: the columns a
  fold model's library model sees, in order, as AutoGluon's `_preprocess_align_features` selects them (a column
  constant in the fold's training rows is left out of that fold's model; the scorer selects the same subset);
- `lightgbm.basic._data_from_pandas`: the array LightGBM's `Booster.predict(frame)` builds from a frame.

The scorer also relies on public but undocumented parts of AutoGluon's model objects (`load_model`,
`load_child`, `models`, `base_model_names`, `features`, `model`, `temperature_scalar`, `conformalize`,
`normalize_pred_probas`, `transform_features`, the weighted ensemble's `model.predict_proba`). All of it was
verified bit for bit with the versions in `PINNED`, the exact pins of pyproject.toml (a test keeps the two
equal). `check_versions` compares the installed versions with them before any of it is read: with another
version the scorer is not used at all. The scorer's own check on the model's input example would likely
catch a change, but six rows are no proof, so an unverified version is not trusted.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

# The versions the fast scorer was verified with: pyproject.toml pins exactly these (autogluon.core comes with
# autogluon.tabular's pin).
PINNED = {"autogluon.tabular": "1.6.3", "autogluon.core": "1.6.3", "lightgbm": "4.7.0", "catboost": "1.2.10"}


class MissingInternal(Exception):
    """A private attribute the scorer reads is not there (a library changed); the message names it."""


class UnverifiedVersion(Exception):
    """An installed library's version is not the one the scorer was verified with; the message says which."""


def check_versions(*packages: str) -> None:
    """Raise `UnverifiedVersion` unless each of `packages` (keys of `PINNED`) is installed at its pinned version."""
    for package in packages:
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != PINNED[package]:
            raise UnverifiedVersion(f"{package} {installed or '(not installed)'} is installed; the fast scorer is "
                                    f"verified with {package}=={PINNED[package]} (the pin in pyproject.toml)")


def _private(owner: Any, name: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        where = owner.__name__ if isinstance(getattr(owner, "__name__", None), str) else type(owner).__name__
        raise MissingInternal(f"{where}.{name}") from None


def trainer(predictor) -> Any:
    """The predictor's trainer (`load_model(name)` loads any of its models)."""
    return _private(predictor, "_trainer")


def learner(predictor) -> Any:
    """The predictor's learner (`transform_features(frame)`: AutoGluon's feature transform)."""
    return _private(predictor, "_learner")


def post_process_predict_proba(learner) -> Any:
    """The learner's post-processing of raw probabilities into AutoGluon's `predict_proba` frame."""
    return _private(learner, "_post_process_predict_proba")


def lightgbm_renames_columns(fold) -> bool:
    """Whether a fitted `LGBModel` renames its columns before LightGBM sees them."""
    return bool(_private(fold, "_requires_remap"))


def catboost_category_columns(fold) -> list[str] | None:
    """The columns a fitted `CatBoostModel` hands to CatBoost as categories."""
    return _private(fold, "_category_features")


def fold_input_columns(fold) -> list[str]:
    """The columns a fitted fold model hands to its library, in order: its `features` less any it left out.

    Exactly the selection `AbstractModel._preprocess_align_features` makes: all of `features` when
    `_is_features_in_same_as_ex`, else `_features_internal_to_align`."""
    if _private(fold, "_is_features_in_same_as_ex"):
        return list(fold.features)
    columns = _private(fold, "_features_internal_to_align")
    if columns is None:
        raise MissingInternal(f"{type(fold).__name__}._features_internal_to_align")
    return list(columns)


def lightgbm_input_array():
    """`array(frame, booster)`: the array `booster.predict(frame)` would build from the frame."""
    import lightgbm.basic

    data_from_pandas = _private(lightgbm.basic, "_data_from_pandas")

    def array(frame, booster):
        return data_from_pandas(frame, feature_name="auto", categorical_feature="auto",
                                pandas_categorical=booster.pandas_categorical)[0]

    return array
