"""Recipes of the cross-corpus protocol: StandardScaler + a classifier skl2onnx converts, each with a small
grid searched by inner leave-one-corpus-out (``train.crosscorpus.select``). Every ``fit`` takes per-row
``sample_weight`` (equal weight per corpus and class)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from realtime_ser.errors import ConfigError

RANDOM_STATE = 0
LOGREG_MAX_ITER = 1000
MLP_MAX_ITER = 200
MLP_HIDDEN = 64


@dataclass(frozen=True)
class XRecipe:
    name: str
    description: str
    build: Callable[..., Pipeline]
    grid: tuple[dict, ...] = field(default_factory=lambda: ({},))


def _logreg_clf(C: float) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=LOGREG_MAX_ITER, random_state=RANDOM_STATE)


def _mlp_clf(alpha: float, hidden: int = MLP_HIDDEN) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, early_stopping=True, max_iter=MLP_MAX_ITER,
                         random_state=RANDOM_STATE)


def _logreg(C: float = 0.01) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()), ("clf", _logreg_clf(C))])


def _mlp(alpha: float = 1.0, hidden: int = MLP_HIDDEN) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()), ("clf", _mlp_clf(alpha, hidden))])


def _vote(C: float = 0.01, alpha: float = 1.0) -> Pipeline:
    return Pipeline([("scaler", StandardScaler()),
                     ("clf", VotingClassifier([("lr", _logreg_clf(C)), ("mlp", _mlp_clf(alpha))], voting="soft"))])


XRECIPES: dict[str, XRecipe] = {r.name: r for r in (
    XRecipe("logreg", "StandardScaler + multinomial LogisticRegression", _logreg,
            ({"C": 0.001}, {"C": 0.01}, {"C": 0.1})),
    XRecipe("mlp", f"StandardScaler + MLP ({MLP_HIDDEN} hidden units, early stopping)", _mlp,
            ({"alpha": 0.1}, {"alpha": 1.0}, {"alpha": 10.0})),
    XRecipe("vote", "StandardScaler + soft vote of LogisticRegression and MLP", _vote,
            ({"C": 0.01, "alpha": 1.0},)),
)}


def get_xrecipe(name: str) -> XRecipe:
    try:
        return XRECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown cross-corpus recipe {name!r}; choose from {', '.join(XRECIPES)}") from None
