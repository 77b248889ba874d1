"""Metrics computed from summed losses and counts."""

from __future__ import annotations

import math


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), capped so that a diverged model prints a number."""
    return math.exp(min(loss, 50.0))


def bits_per_char(loss: float, chars_per_token: float) -> float:
    """Mean nats per token -> bits per character of the original text."""
    return loss / math.log(2) / chars_per_token


def confusion_matrix(gold: list[int], predicted: list[int], num_classes: int) -> list[list[int]]:
    """matrix[g][p]: how many examples of class g were predicted as p."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, predicted, strict=True):
        matrix[g][p] += 1
    return matrix


def classification_report(matrix: list[list[int]], labels: list[str]) -> dict:
    """Accuracy, macro F1 and per-class precision, recall, F1 and support."""
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(len(labels)))
    per_class, seen = {}, []
    for i, label in enumerate(labels):
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        precision = matrix[i][i] / predicted if predicted else 0.0
        recall = matrix[i][i] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted:
            seen.append(f1)
    # macro F1 over the classes that occur in the gold or predicted labels (as scikit-learn)
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(seen) / len(seen) if seen else 0.0,
        "per_class": per_class,
    }


def multilabel_report(gold: list[set[int]], predicted: list[set[int]], labels: list[str]) -> dict:
    """Exact-match accuracy, and per-label (binary) precision, recall, F1 with macro F1."""
    per_class, seen = {}, []
    for i, label in enumerate(labels):
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if i in g and i in p)
        support = sum(1 for g in gold if i in g)
        predicted_i = sum(1 for p in predicted if i in p)
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted_i:
            seen.append(f1)
    exact = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p)
    return {
        "accuracy": exact / len(gold) if gold else 0.0,
        "macro_f1": sum(seen) / len(seen) if seen else 0.0,
        "per_class": per_class,
    }


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (13a tokenization, cased) and chrF on detokenized text, by sacrebleu,
    with the signatures that say how they were computed."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    return {
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
