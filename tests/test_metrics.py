"""Metrics: confusion matrices, per-class reports."""

import pytest

from seqtool import metrics


def test_classification_report_values():
    matrix = metrics.confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert matrix == [[1, 1], [1, 2]]
    report = metrics.classification_report(matrix, ["a", "b"])
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_multilabel_report_values():
    report = metrics.multilabel_report([{0, 1}, {1}], [{0, 1}, {0}], ["a", "b"])
    assert report["accuracy"] == 0.5
    assert report["per_class"]["a"]["precision"] == 0.5
    assert report["per_class"]["b"]["recall"] == 0.5
