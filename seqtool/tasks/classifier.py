"""The classifier task: labelled lines -> a (bi)directional recurrent classifier."""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from seqtool import checkpoint, distributed, metrics
from seqtool.config import (
    DEFAULT_EPOCHS,
    ClassifierConfig,
    ClassifyConfig,
    TokenizerConfig,
    TrainConfig,
)
from seqtool.data import (
    Example,
    check_file,
    encode_lines,
    length_buckets,
    pad,
    random_holdout,
    read_labeled,
    sub_seed,
    to_device,
)
from seqtool.device import map_by_length
from seqtool.errors import ConfigError, DataError, warn
from seqtool.loaded import Loaded, keyword_options
from seqtool.models.classifier import build_model
from seqtool.tasks import Notify, TrainRequest, restored, training_data
from seqtool.tokenizer import Tokenizer, plan

if TYPE_CHECKING:  # looking inside is imported when used: start-up stays small
    from seqtool.inspect import Inspection, Neighbour

CLASSIFY = ClassifyConfig()

METRICS = ("accuracy", "macro_f1", "loss")
VOCAB_CAP = 16_000  # the largest subword vocabulary chosen without --vocab-size
# a classifier's vocabulary keeps words seen once as well: sentiment and topic ride on
# rare words. SST-2, seeds 0-2: 82.87% with every word (8,611 pieces, as many as
# sentencepiece makes) against 82.06% with the words seen twice (7,465)
VOCAB_RECUR = 1


class ClassifierTask:
    name = "classifier"
    unit = "tokens"
    sizing: str | None = None  # what --max-time chose (fit_to_budget), kept in checkpoints

    def __init__(
        self,
        model_config: ClassifierConfig,
        tokenizer: Tokenizer,
        tokenizer_config: TokenizerConfig,
        train: list[Example],
        valid: list[Example],
        config: TrainConfig,
        metric: str = "accuracy",
        class_weights: str | None = None,
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.model_config, self.tokenizer = model_config, tokenizer
        self.tokenizer_config, self.config = tokenizer_config, config
        self.metric, self.higher_is_better = metric, metric != "loss"
        self.tie_break = None
        self.train_ids = encode_lines(
            tokenizer, [e.text for e in train], model_config.max_length, notify
        )
        self.valid_ids = encode_lines(
            tokenizer, [e.text for e in valid], model_config.max_length, notify
        )
        self.train_targets = make_targets(train, model_config)
        self.valid_targets = make_targets(valid, model_config)
        self.class_weights = class_weights
        self.weights = self._class_weights() if class_weights == "balanced" else None
        self.model = build_model(model_config)
        self.epoch, self.order = -1, []

    def _class_weights(self) -> torch.Tensor:
        """'balanced' (as scikit-learn): n / (classes * count) per class; for multi-label,
        the negatives-to-positives ratio per label as BCE's pos_weight."""
        t = self.train_targets
        if self.model_config.multi_label:
            positives = t.sum(0).clamp(min=1)
            return (len(t) - positives) / positives
        counts = torch.bincount(t, minlength=len(self.model_config.labels)).clamp(min=1).float()
        return len(t) / (len(counts) * counts)

    def fit_to_budget(
        self,
        step_seconds: Callable[[ClassifierConfig], float],
        budget: float,
        given: set[str],
        notify: Callable[[str], None],
    ) -> bool:
        """Fewer ensemble members when `budget` seconds would give each less than the
        epochs of the default budget: members cost time in proportion, and a member
        trained a third as long is worth less than the averaging gains (SST-2 on a CPU
        without bf16: 75.3 with 3 members in 180 s). `step_seconds(config)` times a
        training step of a model; nothing is chosen when the user set --ensemble. True
        when the model was rebuilt."""
        if "ensemble" in given:
            return False
        members, epochs = self.model_config.members, DEFAULT_EPOCHS[self.name]
        # one member's epoch
        epoch_seconds = self.num_batches() * step_seconds(self.model_config) / members
        fitted = max(1, min(members, int(budget / (epochs * epoch_seconds))))
        if fitted == members:
            return False
        self.sizing = (
            f"--max-time {budget:.0f}s gives each of {members} ensemble members "
            f"{budget / (members * epoch_seconds):.1f} of the {epochs} epochs it needs: "
            f"training {fitted} (set --ensemble to choose)"
        )
        notify(self.sizing)
        self.build(dataclasses.replace(self.model_config, members=fitted))
        return True

    def build(self, model_config: ClassifierConfig) -> None:
        """Make `model_config` the task's model, as `--ensemble` and the other options
        would build it."""
        self.model_config = model_config
        torch.manual_seed(self.config.seed)
        self.model = build_model(model_config)

    def num_batches(self) -> int:
        return math.ceil(len(self.train_ids) / self.config.batch_size)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        lengths = [len(s) for s in self.train_ids]
        self.order = length_buckets(
            lengths, self.config.batch_size, sub_seed(self.config.seed, epoch)
        )

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits, targets, self.model_config, self.weights)

    def train_loss(self, model, index: int, device: torch.device):
        batch = self.order[index]
        mine, factor = distributed.part(batch)  # all of it, in one process
        tokens, lengths = pad([self.train_ids[i] for i in mine])
        logits, _ = model(to_device(tokens, device), lengths)
        loss = self.loss(logits, to_device(self.train_targets[mine], device)) * factor
        return loss, sum(len(self.train_ids[i]) for i in batch)

    def evaluate(self, model, device: torch.device) -> dict[str, float]:
        if not self.valid_ids:
            return {}
        logits = predict_logits(model, self.valid_ids, self.config.batch_size * 4, device)
        loss = self.loss(logits, self.valid_targets).item()
        report = score(logits, self.valid_targets, self.model_config)
        return {"loss": loss, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if state["epoch"] >= 0:
            self.start_epoch(state["epoch"])

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_config": self.model_config.to_dict(),
            "tokenizer_config": self.tokenizer_config.to_dict(),
            "tokenizers": {"text": self.tokenizer.proto},
            "task_options": {"metric": self.metric, "class_weights": self.class_weights},
        }


def make_targets(examples: list[Example], config: ClassifierConfig) -> torch.Tensor:
    """Class ids (n,) for single-label data, multi-hot (n, labels) for multi-label."""
    index = {label: i for i, label in enumerate(config.labels)}
    ids = [[index[label] for label in e.labels] for e in examples]
    if not config.multi_label:
        return torch.tensor([i[0] for i in ids])
    hot = torch.zeros(len(ids), len(index))
    for row, labels in enumerate(ids):
        hot[row, labels] = 1.0
    return hot


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    config: ClassifierConfig,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy (softmax, or one sigmoid per label for multi-label); for an
    ensemble in training, logits (members, batch, labels): the sum of the members' losses,
    so that each member learns as if alone."""
    if logits.dim() == 3:
        return sum(classification_loss(member, targets, config, weights) for member in logits)
    weights = None if weights is None else weights.to(logits.device)
    if config.multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weights)
    return F.cross_entropy(logits.float(), targets, weight=weights)


@torch.inference_mode()
def predict_logits(model, sequences: list[list[int]], batch_size: int, device) -> torch.Tensor:
    """Logits (n, labels) in input order; batches are formed from similar lengths and run
    on worker threads on the CPU (seqtool.device.map_by_length)."""

    def forward(chunk: list[int]) -> torch.Tensor:
        tokens, lengths = pad([sequences[i] for i in chunk])
        return model(tokens.to(device), lengths)[0].float().cpu()

    return torch.stack(map_by_length(forward, sequences, batch_size, device))


def decide(logits: torch.Tensor, config: ClassifierConfig, threshold: float = 0.5):
    """Probabilities (n, labels) and the predicted label ids per row: the argmax, or
    (multi-label) every label whose probability reaches the threshold, at least one."""
    if not config.multi_label:
        probs = logits.softmax(-1)
        return probs, [[i] for i in probs.argmax(-1).tolist()]
    probs = logits.sigmoid()
    chosen = []
    for row in probs:
        ids = (row >= threshold).nonzero().flatten().tolist()
        chosen.append(ids or [int(row.argmax())])
    return probs, chosen


def score(logits: torch.Tensor, targets: torch.Tensor, config: ClassifierConfig, threshold=0.5):
    """Accuracy, macro F1, per-class figures (and the confusion matrix, single-label)."""
    _, chosen = decide(logits, config, threshold)
    labels = list(config.labels)
    if config.multi_label:
        gold = [set(row.nonzero().flatten().tolist()) for row in targets]
        return metrics.multilabel_report(gold, [set(c) for c in chosen], labels)
    matrix = metrics.confusion_matrix(targets.tolist(), [c[0] for c in chosen], len(labels))
    return {**metrics.classification_report(matrix, labels), "confusion": matrix}


SHOWN_LABELS = 10  # an error names this many known labels, then how many more


def check_labels(examples: list[Example], config: ClassifierConfig, path: str) -> None:
    known = set(config.labels)
    for e in examples:
        for label in e.labels:
            if label not in known:
                shown = ", ".join(name[:80] for name in config.labels[:SHOWN_LABELS])
                more = len(config.labels) - SHOWN_LABELS
                shown += f" and {more:,} more" if more > 0 else ""
                raise DataError(
                    f"{path}:{e.line}: label {label[:80]!r} was not seen in training "
                    f"(known: {shown})"
                )


def prepare(request: TrainRequest, notify: Notify) -> ClassifierTask:
    train_path, valid_path, config = request.train, request.valid, request.config
    data = training_data(request, [check_file(train_path)])
    train, skipped = read_labeled(train_path)
    if skipped:
        notify(f"{train_path}: skipped {skipped:,} empty lines")
    if valid_path:
        valid, skipped = read_labeled(valid_path)
        if skipped:
            notify(f"{valid_path}: skipped {skipped:,} empty lines")
    else:
        cut = max(1, len(train) // 10)
        train, valid = random_holdout(train, cut, config.seed)
        # a label the draw took every line of could not be learned: its lines go back
        seen = {label for e in train for label in e.labels}
        back = [e for e in valid if not seen.issuperset(e.labels)] if train else []
        if back:
            valid = [e for e in valid if seen.issuperset(e.labels)]
            train = sorted(train + back, key=lambda e: e.line)
        if not valid:
            raise DataError(
                f"{train_path}: no label occurs often enough to hold lines of it out for "
                "validation; give --valid"
            )
        rare = f"; {len(back):,} put back: the draw took every line of their labels" if back else ""
        notify(
            f"no --valid given: holding out a random 10% of {train_path} ({len(valid):,} lines"
            f"{rare})"
        )
    if not train:
        raise DataError(f"{train_path}: too few examples to train on")
    if request.resume is not None:
        # a checkpoint from before task_options were stored: the options given now
        options = request.resume.get("task_options", request.options)
        model_config, tokenizer_config = restored(request, ClassifierConfig, build_model)
        tokenizer = checkpoint.tokenizer(request.resume)
    else:
        options = request.options
        multi = request.model_options.get("multi_label")
        several = next((e for e in train if len(e.labels) > 1), None)
        if several is not None and multi is False:
            raise DataError(
                f"{train_path}:{several.line}: the line has {len(several.labels)} labels; "
                f"train without --single-label"
            )
        if multi is None:
            multi = several is not None
            if multi:
                notify(
                    f"{train_path}:{several.line} has {len(several.labels)} labels: training "
                    "one sigmoid per label (--multi-label)"
                )
        labels = sorted(Counter(label for e in train for label in e.labels))
        # a line's first word gets the same pieces as elsewhere: +1.1 points on SST-2
        texts = [e.text for e in train]
        kind, size, why = plan(
            request.tokenizer.kind, request.tokenizer.vocab_size, texts, VOCAB_CAP, VOCAB_RECUR
        )
        chosen = (f"{kind}: {why}",) if why else ()
        if why:
            notify(f"tokenizer {kind}: {why}")
        tokenizer_config = dataclasses.replace(request.tokenizer, lead_space=True, chosen=chosen)
        tokenizer, warning = Tokenizer.train(
            texts, kind, tokenizer_config.vocab_size, size, tokenizer_config.lead_space
        )
        if warning:
            notify(warning)
        model_config = ClassifierConfig(
            vocab_size=tokenizer.vocab_size,
            labels=tuple(labels),
            **{**request.model_options, "multi_label": multi},
        )
    check_labels(valid, model_config, valid_path or train_path)
    torch.manual_seed(config.seed)
    task = ClassifierTask(
        model_config,
        tokenizer,
        tokenizer_config,
        train,
        valid,
        config,
        options.get("metric", "accuracy"),
        options.get("class_weights"),
        notify,
    )
    task.data = data
    return task


@dataclass(frozen=True)
class Classification:
    """The decision on one text: the best label and its probability, every label chosen
    (several for multi-label models), and the top labels with probabilities, best first."""

    label: str
    labels: list[str]
    probability: float
    top: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """The `classify --json` record."""
        return {
            "label": self.label,
            "labels": self.labels,
            "probability": round(self.probability, 6),
            "top": [[label, round(p, 6)] for label, p in self.top],
        }


@dataclass(frozen=True)
class Explanation:
    """Which pieces an attention-pooling classifier rests its decision on: the pieces
    of the text and their attention weights (summing to 1)."""

    pieces: list[str]
    weights: list[float]


class Classifier(Loaded):
    """A trained text classifier: `classify`, `explain`, `evaluate`, `info`."""

    task = "classifier"

    def __init__(self, ckpt: dict[str, Any], device: torch.device, quantize: str = "none") -> None:
        super().__init__(ckpt, device, quantize)
        self.model = self._ready(checkpoint.restore_model(ckpt, ClassifierConfig, build_model))
        self.config = self.model.config
        self.tokenizer = checkpoint.tokenizer(ckpt)
        self.labels = list(self.config.labels)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return encode_lines(self.tokenizer, texts, self.config.max_length, warn)

    def classify(
        self,
        text: str | list[str],
        *,
        top_k: int | None = None,
        threshold: float = CLASSIFY.threshold,
        batch_size: int = CLASSIFY.batch_size,
    ) -> Classification | list[Classification]:
        """Label a text, or each text of a list (batched by length)."""
        options = ClassifyConfig(top_k, threshold, batch_size)
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            return []
        logits = predict_logits(self.model, self._encode(texts), options.batch_size, self.device)
        probs, chosen = decide(logits, self.config, options.threshold)
        results = []
        for row, ids in zip(probs.tolist(), chosen, strict=True):
            ranked = sorted(range(len(row)), key=lambda i: -row[i])[: options.top_k or len(row)]
            results.append(
                Classification(
                    label=self.labels[ids[0]],
                    labels=[self.labels[i] for i in ids],
                    probability=row[ids[0]],
                    top=[(self.labels[i], row[i]) for i in ranked],
                )
            )
        return results[0] if isinstance(text, str) else results

    __call__ = classify  # model(texts, ...), as a pipeline is called

    def check_explainable(self) -> None:
        """Refuse to explain with a model whose pooling has no weights to show."""
        if self.config.pooling != "attention":
            raise ConfigError(
                f"explaining needs a model trained with --pooling attention "
                f"(this one pools with {self.config.pooling})"
            )

    def explain(self, text: str) -> Explanation:
        """The attention weight of each piece of `text` (models with --pooling attention)."""
        self.check_explainable()
        ids = self._encode([text])[0]
        with torch.inference_mode():
            tokens = torch.tensor([ids], device=self.device)
            _, weights = self.model(tokens, torch.tensor([len(ids)]))
        pieces = [self.tokenizer.piece(i) for i in ids]
        return Explanation(pieces, weights[0].float().tolist())

    @keyword_options
    def evaluate(
        self,
        data: str | os.PathLike | Sequence[tuple[str, str]],
        *,
        batch_size: int | None = None,
        threshold: float = CLASSIFY.threshold,
    ) -> dict[str, Any]:
        """accuracy, macro_f1, loss, per-class figures and the confusion matrix of a
        labelled file, or of (text, label) pairs."""
        batch_size = batch_size or self.train_config.get("batch_size", 32)
        ClassifyConfig(threshold=threshold, batch_size=batch_size)  # checks both
        where = str(data) if isinstance(data, str | os.PathLike) else "evaluate"
        if isinstance(data, str | os.PathLike):
            examples, skipped = read_labeled(data)
            if skipped:
                warn(f"{data}: skipped {skipped:,} empty lines")
        else:
            examples = [Example((label,), text, i) for i, (text, label) in enumerate(data, 1)]
            if not examples:
                raise DataError("evaluate: no (text, label) pairs given")
        check_labels(examples, self.config, where)
        ids = self._encode([e.text for e in examples])
        logits = predict_logits(self.model, ids, batch_size, self.device)
        targets = make_targets(examples, self.config)
        report = score(logits, targets, self.config, threshold)
        loss = classification_loss(logits, targets, self.config).item()
        return {"loss": loss, **report, "examples": len(examples)}

    @keyword_options
    def inspect(
        self,
        text: str,
        *,
        unit: str | None = None,
        find: str | None = None,
        layer: int | None = None,
        kind: str | None = None,
        saturation: bool = False,
    ) -> Inspection:
        """Units and gates of the recurrent layer (of an ensemble's first member) over
        the pieces of `text`, as Generator.inspect; a classifier predicts no pieces, so
        there are no bits. Bidirectional layers number the backward units after the
        forward ones, as their output does."""
        from seqtool.inspect import Inspection, inspect_recurrent

        self._fp32("inspect")
        model = self.model.members[0] if self.config.members > 1 else self.model
        ids = self._encode([text])[0]
        with torch.inference_mode():
            pieces, units, feature, saturated = inspect_recurrent(
                model.embedding, model.rnn, self.tokenizer, ids, 0,
                unit, find, layer, kind, saturation,
            )  # fmt: skip
        return Inspection(pieces, [], None, [], units, feature, saturated)

    @keyword_options
    def neighbours(self, piece: str, *, top_k: int = 10) -> list[Neighbour]:
        """The top_k pieces nearest `piece` by cosine similarity of the embeddings (of
        an ensemble's first member)."""
        from seqtool.inspect import neighbours

        model = self.model.members[0] if self.config.members > 1 else self.model
        return neighbours(model.embedding.weight, self.tokenizer, piece, top_k)


Inference = Classifier
