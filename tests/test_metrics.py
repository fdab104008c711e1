"""The evaluation figures on a hand-made example whose values are worked out by hand."""

import math

import pytest

from train.metrics import classification_figures

LABELS = ["angry", "happy", "sad"]
# truth: 4 angry, 2 happy, 2 sad (and no other class)
Y_TRUE = ["angry", "angry", "angry", "angry", "happy", "happy", "sad", "sad"]
Y_PRED = ["angry", "angry", "angry", "happy", "happy", "sad", "sad", "sad"]


def test_confusion_rows_are_truth_columns_predictions():
    f = classification_figures(Y_TRUE, Y_PRED, LABELS)
    assert f["confusion"] == [[3, 1, 0],
                              [0, 1, 1],
                              [0, 0, 2]]
    assert f["support"] == {"angry": 4, "happy": 2, "sad": 2}


def test_accuracy_ua_and_per_class_recall():
    f = classification_figures(Y_TRUE, Y_PRED, LABELS)
    assert f["accuracy"] == pytest.approx(6 / 8)
    assert f["per_class_recall"] == pytest.approx({"angry": 0.75, "happy": 0.5, "sad": 1.0})
    # UA is the mean of the per-class recalls, not the accuracy: (0.75 + 0.5 + 1) / 3
    assert f["ua"] == pytest.approx(0.75)
    assert f["n"] == 8


def test_macro_f1_kappa_mcc_by_hand():
    f = classification_figures(Y_TRUE, Y_PRED, LABELS)
    # precision: angry 3/3, happy 1/2, sad 2/3; recall 3/4, 1/2, 1
    f1 = [2 * 1 * 0.75 / 1.75, 0.5, 2 * (2 / 3) * 1 / (5 / 3)]
    assert f["macro_f1"] == pytest.approx(sum(f1) / 3)
    # kappa: p_o = 6/8; p_e = (4*3 + 2*2 + 2*3) / 64 = 22/64
    assert f["kappa"] == pytest.approx((6 / 8 - 22 / 64) / (1 - 22 / 64))
    # multiclass MCC (Gorodkin): (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    c, s = 6, 8
    pk, tk = [3, 2, 3], [4, 2, 2]
    num = c * s - sum(p * t for p, t in zip(pk, tk, strict=True))
    den = math.sqrt((s * s - sum(p * p for p in pk)) * (s * s - sum(t * t for t in tk)))
    assert f["mcc"] == pytest.approx(num / den)


def test_absent_class_has_no_recall_and_does_not_count_in_ua():
    labels = LABELS + ["fearful"]
    f = classification_figures(Y_TRUE, Y_PRED, labels)
    assert f["per_class_recall"]["fearful"] is None
    assert f["ua"] == pytest.approx(0.75)
    assert f["confusion"][3] == [0, 0, 0, 0]


def test_perfect_and_unknown_labels():
    f = classification_figures(Y_TRUE, Y_TRUE, LABELS)
    assert f["ua"] == 1.0 and f["kappa"] == 1.0 and f["mcc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the class list"):
        classification_figures(["angry"], ["bored"], LABELS)
