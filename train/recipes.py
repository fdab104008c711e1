"""Recipes: how to build a scikit-learn estimator, and which hyper-parameters to select among.

A recipe is a name, a ``build(**params) -> Pipeline`` (StandardScaler + classifier, with
``predict_proba``, convertible by skl2onnx) and a small grid of parameter dicts. The grid
is searched by speaker-grouped cross-validation inside the training speakers only
(``train.evaluate.select_params``). To add a recipe, write its build function and add a
``Recipe`` to ``RECIPES``; ``tests/test_train.py`` converts every registered recipe.

The normalisation mode (``none`` or ``online_speaker``) is chosen separately: every recipe
runs in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from realtime_ser.errors import ConfigError

RANDOM_STATE = 0
LOGREG_MAX_ITER = 2000
SVC_CALIBRATION_FOLDS = 3
MLP_MAX_ITER = 300
NORM_MODES = ("none", "online_speaker")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    build: Callable[..., Pipeline]
    grid: tuple[dict, ...] = field(default_factory=lambda: ({},))
    inner_folds: int = 3  # speaker groups of the inner CV that selects among ``grid``


def _logreg(C: float = 0.1) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()),
                     ("clf", LogisticRegression(C=C, max_iter=LOGREG_MAX_ITER, random_state=RANDOM_STATE))])


def _logreg_balanced(C: float = 0.1) -> Pipeline:
    # Classes weighted inversely to their frequency (RAVDESS has half as many neutral clips): UA is the target.
    return Pipeline([("scaler", StandardScaler()),
                     ("clf", LogisticRegression(C=C, class_weight="balanced", max_iter=LOGREG_MAX_ITER,
                                                random_state=RANDOM_STATE))])


def _svc(C: float = 10.0) -> Pipeline:
    # SVC(probability=True) is deprecated in scikit-learn 1.9: calibrate the decision function instead.
    # ensemble=False keeps a single SVC (fitted on all training rows) in the model: one set of support
    # vectors in the ONNX file instead of one per calibration fold.
    svc = SVC(kernel="rbf", C=C, gamma="scale", random_state=RANDOM_STATE)
    return Pipeline([("scaler", StandardScaler()),
                     ("clf", CalibratedClassifierCV(svc, method="sigmoid", cv=SVC_CALIBRATION_FOLDS, ensemble=False))])


def _mlp(alpha: float = 1e-2, hidden: int = 128) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()),
                     ("clf", MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, early_stopping=True,
                                           max_iter=MLP_MAX_ITER, random_state=RANDOM_STATE))])


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("logreg", "StandardScaler + multinomial LogisticRegression", _logreg,
           ({"C": 0.01}, {"C": 0.1}, {"C": 1.0})),
    Recipe("logreg_bal", "StandardScaler + multinomial LogisticRegression, class_weight='balanced'", _logreg_balanced,
           ({"C": 0.01}, {"C": 0.1}, {"C": 1.0})),
    # Two inner folds: an RBF SVC costs ~5x a logistic regression, and the full evaluation must fit in 30 min.
    Recipe("svc", "StandardScaler + sigmoid-calibrated RBF SVC (CalibratedClassifierCV, cv=3, one SVC)", _svc,
           ({"C": 1.0}, {"C": 10.0}), inner_folds=2),
    Recipe("mlp", "StandardScaler + MLP (one hidden layer, early stopping)", _mlp,
           ({"alpha": 1e-2}, {"alpha": 1.0})),
)}
DEFAULT_RECIPES = ("logreg", "logreg_bal", "svc")


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}") from None


def check_norm_mode(mode: str) -> str:
    if mode not in NORM_MODES:
        raise ConfigError(f"unknown normalisation mode {mode!r}; choose from {', '.join(NORM_MODES)}")
    return mode
