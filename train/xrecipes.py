"""Recipes of the cross-corpus protocol: StandardScaler + a classifier skl2onnx converts, each with a small
grid searched by inner leave-one-corpus-out (``train.crosscorpus.select``). Every ``fit`` takes per-row
``sample_weight`` (equal weight per corpus and class)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from realtime_ser import features
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


HIGH_MFCC = 13  # MFCCs from this order up carry fine spectral (phonetic, language) detail


def _feature_group(name: str, group: str) -> bool:
    base = name.rsplit("_", 1)[0] if not name.startswith("dmfcc") else name
    if group == "all":
        return True
    if group == "no_logmel":
        return not base.startswith("logmel")
    if group == "low_mfcc":
        if base.startswith("logmel"):
            return False
        for prefix in ("dmfcc", "mfcc"):
            if base.startswith(prefix) and base[len(prefix):].isdigit():
                return int(base[len(prefix):]) < HIGH_MFCC
        return True
    if group == "no_cepstra":
        return not base.startswith(("logmel", "mfcc", "dmfcc"))
    raise ConfigError(f"unknown feature group {group!r}; choose from {', '.join(FEATURE_GROUPS)}")


FEATURE_GROUPS = ("all", "no_logmel", "low_mfcc", "no_cepstra")


def feature_columns(group: str) -> list[int]:
    return [i for i, n in enumerate(features.FEATURE_SPEC["names"]) if _feature_group(n, group)]


def _steps(group: str) -> list:
    if group == "all":
        return [("scaler", StandardScaler())]
    keep = ColumnTransformer([("keep", "passthrough", feature_columns(group))], remainder="drop")
    return [("select", keep), ("scaler", StandardScaler())]


def _logreg_clf(C: float) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=LOGREG_MAX_ITER, random_state=RANDOM_STATE)


def _mlp_clf(alpha: float, hidden: int = MLP_HIDDEN) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, early_stopping=True, max_iter=MLP_MAX_ITER,
                         random_state=RANDOM_STATE)


def _logreg(C: float = 0.01, features: str = "all") -> Pipeline:
    return Pipeline(_steps(features) + [("clf", _logreg_clf(C))])


def _mlp(alpha: float = 1.0, hidden: int = MLP_HIDDEN, features: str = "all") -> Pipeline:
    return Pipeline(_steps(features) + [("clf", _mlp_clf(alpha, hidden))])


def _vote(C: float = 0.001, alpha: float = 1.0, features: str = "all") -> Pipeline:
    return Pipeline(_steps(features) +
                    [("clf", VotingClassifier([("lr", _logreg_clf(C)), ("mlp", _mlp_clf(alpha))], voting="soft"))])


XRECIPES: dict[str, XRecipe] = {r.name: r for r in (
    XRecipe("logreg", "StandardScaler + multinomial LogisticRegression", _logreg,
            ({"C": 0.0003}, {"C": 0.001}, {"C": 0.003})),
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
