"""The one training loop, shared by all tasks.

AdamW, gradient clipping by norm, warmup then cosine decay driven by the budget (steps,
epochs or wall time, whichever runs out first), validation every `eval_every` steps,
early stopping, `best.ckpt` on improvement and `last.ckpt` at every evaluation, and
`metrics.jsonl`; with `average_last` N, the weights of the last N evaluations in
`recent/` and their mean in `averaged.ckpt` at the end. With `ema` a moving average of
the weights is what is validated and saved (`model_state`); last.ckpt keeps the trained
weights under `train_weights` for --resume. SIGINT, SIGTERM and SIGHUP
finish the current step, save `last.ckpt` and raise TrainingInterrupted. A resumed run restores
optimizer, scaler, RNG, data position and task state, so it reaches the same weights as
an uninterrupted one (on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from seqtool import averaging, checkpoint, distributed, files, tasks
from seqtool.config import DEFAULT_EPOCHS, OPTION_FIELDS, TokenizerConfig, TrainConfig
from seqtool.device import allocating, autocast, pick_device, pick_precision, set_threads
from seqtool.errors import (
    CheckpointError,
    ConfigError,
    TrainingError,
    TrainingInterrupted,
    first_line,
    warn,
)
from seqtool.tasks import TrainRequest

RECENT = "recent"  # the run directory's folder of the last evaluations' weights
AVERAGED = "averaged.ckpt"
CONFIG = "config.yaml"  # the options that repeat the run (`seqtool train --config`)


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # index of the next batch within the epoch
    tokens: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumed runs
    best: float | None = None
    best_step: int | None = None
    best_loss: float | None = None  # the validation loss at the best score: breaks ties
    best_tie: float | None = None  # the task's tie_break metric there: decides a tie first
    bad_evals: int = 0  # evaluations since the last improvement


class Callbacks(Protocol):
    """What the loop reports; seqtool.ui renders it. Every method is optional."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_step(self, trainer: Trainer) -> None: ...
    def on_log(self, record: dict[str, Any]) -> None: ...
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def on_note(self, message: str) -> None: ...
    def on_end(self, trainer: Trainer) -> None: ...


class Trainer:
    def __init__(
        self,
        task,
        config: TrainConfig,
        run_dir: Path,
        callbacks: Callbacks | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.task, self.config, self.run_dir = task, config, Path(run_dir)
        # only the first process reports, evaluates and writes files
        self.main = distributed.is_main()
        self.callbacks = callbacks if self.main else None
        self.device = pick_device(config.device)
        self.precision = pick_precision(config.precision, self.device)
        self.model = task.model.to(self.device)  # checkpoints hold this, never the wrapper
        self.network = self.model  # what the training step runs
        if distributed.world() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        # the exponential moving average of the parameters, in their order (--ema)
        self.ema = [p.detach().clone() for p in self.model.parameters()] if config.ema else None
        self.progress = Progress()
        self.last_eval: dict[str, Any] = {}
        # steps between evaluations: fixed, or (eval_every None) fitted to --max-time;
        # inf: at the end only
        self.eval_every: float | None = config.eval_every
        self.steps_per_s: float | None = None
        self._stop_signal: int | None = None
        # an earlier run's files that --force moved aside: removed once this run has
        # saved its own checkpoint
        self.replaced: Path | None = None
        if resume is not None:
            self._restore(resume)

    # -- budget and schedule -------------------------------------------------------

    def fraction_done(self) -> float:
        """How much of the budget is spent, in [0, 1]; the largest of the budgets given."""
        c, p = self.config, self.progress
        parts = []
        if c.max_steps:
            parts.append(p.step / c.max_steps)
        if c.max_epochs:
            parts.append((p.epoch + p.batch / self.task.num_batches()) / c.max_epochs)
        if c.max_time:
            parts.append(p.elapsed / c.max_time)
        return min(1.0, max(parts))

    def learning_rate(self) -> float:
        c = self.config
        warmup = min(1.0, (self.progress.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.schedule == "constant":
            return c.lr * warmup
        # cosine from lr down to lr / 10 over the budget
        return c.lr * warmup * (0.1 + 0.45 * (1 + math.cos(math.pi * self.fraction_done())))

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        self._stop_signal = signum

    # -- the loop -------------------------------------------------------------------

    def fit(self) -> Progress:
        if not self.config.has_budget:
            raise ConfigError("give a budget: --max-steps, --max-epochs or --max-time")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            # saves that a killed run left unfinished
            checkpoint.clean_temporary(self.run_dir)
            checkpoint.clean_temporary(self.run_dir / RECENT)
        self._call("on_start", self)
        # SIGHUP: the terminal or ssh session that started the run has gone
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in stops}
        try:
            self._loop()
            if self.main and self.config.average_last:
                self._write_average()
        except (RuntimeError, torch.distributed.DistError) as err:
            if distributed.world() == 1:
                raise
            # gloo and nccl report a dead peer or a timeout as one of these; keep the gist
            reason = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip()).split(". ")[0]
            reason = reason.splitlines()[0] if reason else type(err).__name__
            raise TrainingError(
                f"process {distributed.rank()} of {distributed.world()} lost the others at "
                f"step {self.progress.step} ({reason}); every process must run, "
                f"restart with --resume"
            ) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._call("on_end", self)
        return self.progress

    def _loop(self) -> None:
        """One optimizer step per batch until the budget is spent, a log line every
        log_every steps, an evaluation when due; a stop signal saves and raises."""
        p, task = self.progress, self.task
        started, start_elapsed, start_step = time.perf_counter(), p.elapsed, p.step
        window = _Window()
        self.model.train()
        if p.batch == 0:
            task.start_epoch(p.epoch)
        while self.fraction_done() < 1.0:
            lr = self.learning_rate()
            loss, tokens = self._step(self.network, p.batch, lr)
            self._advance(tokens)
            self._smooth()
            p.elapsed = start_elapsed + time.perf_counter() - started
            window.add(loss, tokens)
            self._call("on_step", self)
            # every process sees the same time spent and stops at the same step
            stop, p.elapsed = distributed.agree(self._stop_signal is not None, p.elapsed)
            if p.step % self.config.log_every == 0:
                self._log(window.record(p, lr, task), "on_log")
            if stop:
                self._save_last()
                cause = f"signal {self._stop_signal}" if self._stop_signal else "another process"
                raise TrainingInterrupted(f"stopped by {cause} at step {p.step}")
            if self._eval_due(started, start_step) and self._evaluate():
                return
        if self.last_eval.get("step") != p.step:
            self._evaluate()

    def _step(self, network, index: int, lr: float) -> tuple[float, int]:
        """One optimizer step on batch `index` at learning rate `lr`: (loss, tokens)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.precision):
            loss, tokens = self.task.train_loss(network, index, self.device)
        value = loss.item()
        if not math.isfinite(value):
            raise self._diverged(f"the loss became {value}", self.progress.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value, tokens

    def _smooth(self) -> None:
        """Move the average towards the weights. The decay starts low, as Marian's
        exponential smoothing does, so that the average forgets the random start: its
        window is about a ninth of the steps so far, up to 1 / (1 - ema) steps."""
        if self.ema is None:
            return
        step = self.progress.step
        weight = 1.0 - min(self.config.ema, (step + 1) / (step + 10))
        with torch.no_grad():
            for average, param in zip(self.ema, self.model.parameters(), strict=True):
                average.lerp_(param, weight)

    @contextlib.contextmanager
    def _smoothed(self):
        """Inside, the model holds the averaged weights (the trained ones without --ema)
        to be validated; they are copied in and back, little beside an evaluation."""
        if self.ema is None:
            yield
            return
        params = list(self.model.parameters())
        with torch.no_grad():
            trained = [p.detach().clone() for p in params]
            for param, average in zip(params, self.ema, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(params, trained, strict=True):
                    param.copy_(weights)

    def _advance(self, tokens: int) -> None:
        """Count a step; at the end of an epoch, start the next."""
        p = self.progress
        p.step, p.tokens, p.batch = p.step + 1, p.tokens + tokens, p.batch + 1
        if p.batch == self.task.num_batches():
            p.epoch, p.batch = p.epoch + 1, 0
            self.task.start_epoch(p.epoch)

    def time_steps(self, count: int) -> float:
        """Seconds per training step, timed over `count` steps after two that warm up.
        The weights and the random state are put back afterwards, so a run that starts
        after this one is the same as without it (build a new Trainer: the optimizer has
        moved)."""
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        rng = torch.get_rng_state()
        self.model.train()
        self.task.start_epoch(0)
        began = time.perf_counter()
        for i in range(count + 2):
            if i == 2:
                began = time.perf_counter()
            # the model, not its DDP wrapper: under torchrun only the first process
            # times steps, and a wrapper would wait for the others' gradients
            self._step(self.model, i % self.task.num_batches(), self.config.lr)
        seconds = (time.perf_counter() - began) / count
        self.model.load_state_dict(weights)
        torch.set_rng_state(rng)
        return seconds

    # -- evaluations fitted to the budget ------------------------------------------------

    PLAN_STEPS = 20  # steps timed before the evaluations are planned
    EVALUATIONS = 10  # about this many over the budget: the best checkpoint is not missed
    EVAL_SHARE = 0.1  # at most this share of the time goes to evaluations
    # a run that sees its data fewer times than this validates at the end only: it has not
    # read an example twice long enough to overfit, and its rate falls to the last step.
    # The evaluation it saves is the costly one: on Multi30k at 40 s one took 3.7 s (10%
    # of the budget, ~25 steps, where each step is worth about a tenth of a BLEU point)
    FINAL_ONLY_EPOCHS = 2.0

    def _eval_due(self, started: float, start_step: int) -> bool:
        p = self.progress
        if self.config.eval_every is not None:
            return p.step % self.config.eval_every == 0
        if self.eval_every is None:
            if p.step - start_step < self.PLAN_STEPS:
                return False
            self._plan(started, start_step)
        if p.step - self.last_eval.get("step", 0) < self.eval_every:
            return False
        # with under half a spacing left, the evaluation at the end comes soon enough: one
        # now would look at nearly the same weights and take their steps from the run
        left = self.steps_per_s * max(self.config.max_time - p.elapsed, 0.0)
        return left >= self.eval_every / 2

    def _plan(self, started: float, start_step: int) -> None:
        """Time the first steps and spread about EVALUATIONS evaluations over the rest of
        --max-time (on a CPU without bf16 steps take twice as long, so no fixed number
        of steps fits every machine)."""
        c, p = self.config, self.progress
        rate = (p.step - start_step) / max(time.perf_counter() - started, 1e-9)
        self.steps_per_s = distributed.on_main(lambda: rate)  # one plan for all processes
        total = p.step + self.steps_per_s * max(c.max_time - p.elapsed, 0.0)
        epochs = total / self.task.num_batches()
        if epochs < self.FINAL_ONLY_EPOCHS:
            self.eval_every = math.inf
            plan = f"validating at the end only ({epochs:.1f} epochs, too few to overfit)"
        else:
            self.eval_every = max(self.PLAN_STEPS, round(total / self.EVALUATIONS))
            plan = f"validating every {self.eval_every:,} steps"
        self._call(
            "on_note",
            f"{self.steps_per_s:.1f} steps/s: about {total:,.0f} steps in --max-time; {plan}",
        )

    def _fit_eval_cost(self, seconds: float) -> None:
        """Space evaluations so that they take at most EVAL_SHARE of the time: k steps of
        training cost k / rate seconds, so k >= seconds * rate * (1 - share) / share."""
        if self.config.eval_every is not None or self.steps_per_s is None:
            return
        share = self.EVAL_SHARE
        least = math.ceil(seconds * self.steps_per_s * (1 - share) / share)
        if least > self.eval_every:
            self.eval_every = least
            self._call(
                "on_note",
                f"an evaluation takes {seconds:.1f}s: validating every {least:,} steps",
            )

    def _wins_tie(self, tie: float | None, loss: float | None) -> bool:
        """Whether an evaluation that ties the best score is better: the higher
        `task.tie_break` metric (`tie`), then the lower validation loss. BLEU is 0 at
        every evaluation when targets are single words, and without a tie-break
        best.ckpt would stay the first evaluation's; the loss alone is not enough there:
        it rises as the model grows sure of itself while its exact match still climbs
        (the reverse task: loss lowest at 40% of the run, chrF 99.7; chrF 100 from 60%)."""
        best = self.progress
        if tie is not None and best.best_tie is not None and tie != best.best_tie:
            return tie > best.best_tie
        return loss is not None and (best.best_loss is None or loss < best.best_loss)

    def _evaluate(self) -> bool:
        """Validate, save checkpoints; True when early stopping says to stop."""
        c, p, task = self.config, self.progress, self.task
        metrics = {}
        if self.main:
            began = time.perf_counter()
            with self._smoothed():
                metrics = self._validate(self.model)
            self.model.train()
            self._fit_eval_cost(time.perf_counter() - began)
        if c.eval_every is None and self.eval_every is not None:
            self.eval_every = distributed.on_main(lambda: self.eval_every)
        # never save weights that overflowed: the checkpoints on disk stay the good ones
        problem = distributed.on_main(lambda: self._divergence(metrics))
        if problem:
            raise self._diverged(problem, p.step)
        score = metrics.get(task.metric)
        loss = metrics.get("loss")
        tie = metrics.get(task.tie_break) if task.tie_break else None
        improved = score is not None and (
            p.best is None
            or (score > p.best if task.higher_is_better else score < p.best)
            or (score == p.best and self._wins_tie(tie, loss))
        )
        if improved:
            p.best, p.best_step, p.bad_evals = score, p.step, 0
            p.best_loss, p.best_tie = loss, tie
        elif score is not None:
            p.bad_evals += 1
        self.last_eval = {"step": p.step, "split": "valid", **metrics, "best": bool(improved)}
        if self.main and (improved or score is None):
            checkpoint.save(self.run_dir / "best.ckpt", self._payload(last=False))
        if self.main and c.average_last:
            # before last.ckpt: a run killed in between redoes this evaluation on resume
            self._keep_recent()
        self._save_last()
        if self.main:
            self._log(self.last_eval, "on_eval")
        return distributed.share(c.patience is not None and p.bad_evals >= c.patience)

    def _validate(self, model) -> dict[str, Any]:
        """The task's validation metrics of `model` (left in eval mode)."""
        model.eval()
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.task.evaluate(model, self.device)

    def _divergence(self, metrics: dict[str, Any]) -> str | None:
        """What went non-finite: the validation loss or the weights; None when neither."""
        loss = metrics.get("loss", 0.0)
        if not math.isfinite(loss):
            return f"the validation loss became {loss}"
        finite = torch.stack([torch.isfinite(w).all() for w in self.model.parameters()])
        return None if finite.all() else "the weights became inf or nan"

    def _diverged(self, what: str, step: int) -> TrainingError:
        kept = (
            f"the last good checkpoint is kept in {self.run_dir}"
            if (self.run_dir / "last.ckpt").exists()
            else "no checkpoint was saved yet"
        )
        return TrainingError(f"{what} at step {step}; {kept}; lower --lr or --clip")

    # -- checkpoints ------------------------------------------------------------------

    def _payload(self, last: bool) -> dict[str, Any]:
        payload = {
            **self.task.checkpoint_info(),
            "data": self.task.data,
            "train_config": self.config.to_dict(),
            "model_state": self._weights(smoothed=True),
            "progress": dataclasses.asdict(self.progress),
            "metrics": _numbers(self.last_eval),
        }
        if self.task.sizing:
            payload["sizing"] = self.task.sizing
        if last:
            rng, task_state = self._local_state()
            payload |= {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "task_state": task_state,
            }
            if self.ema is not None:
                payload["train_weights"] = self._weights(smoothed=False)
        return payload

    def _weights(self, smoothed: bool) -> dict[str, torch.Tensor]:
        """The model's state on the CPU, each parameter's average in its place if
        `smoothed` (and --ema). Looked up by parameter, not by name: a tied weight is
        one parameter under two names."""
        average = {}
        if smoothed and self.ema is not None:
            average = {id(p): a for p, a in zip(self.model.parameters(), self.ema, strict=True)}
        state = self.model.state_dict(keep_vars=True)
        return {k: average.get(id(v), v).detach().cpu() for k, v in state.items()}

    def _local_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """This process's RNG and task state (the generator's hidden state, say)."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng, self.task.state_dict()

    def _save_last(self) -> None:
        """Every process takes part: with several, the first writes all their RNG and
        task states (lists in rank order) so that each resumes where it stopped."""
        states = distributed.gather(self._local_state())
        if not self.main:
            return
        payload = self._payload(last=True)
        if len(states) > 1:
            payload["rng"] = [rng for rng, _ in states]
            payload["task_state"] = [task for _, task in states]
        checkpoint.save(self.run_dir / "last.ckpt", payload)
        if self.replaced is not None:
            shutil.rmtree(self.replaced)
            self.replaced = None

    def _keep_recent(self) -> None:
        """This evaluation's weights as RECENT/step-N.ckpt, the newest `average_last` of
        them kept. On disk rather than in memory, so that a resumed run averages the
        evaluations made before it stopped."""
        recent = self.run_dir / RECENT
        recent.mkdir(exist_ok=True)
        path = recent / f"step-{self.progress.step:09d}.ckpt"  # names sort by step
        checkpoint.save(path, self._payload(last=False))
        files = sorted(recent.glob("step-*.ckpt"))
        # a file past this step is from a run killed before its last.ckpt caught up: the
        # resumed run has redone those steps, and maybe evaluated at other ones
        newer = [f for f in files if f.name > path.name]
        older = [f for f in files if f.name <= path.name][: -self.config.average_last]
        for old in newer + older:
            old.unlink()

    def _write_average(self) -> None:
        """AVERAGED: the mean of the kept evaluations' weights, with its own validation
        metrics, reported next to best.ckpt's score."""
        kept = sorted((self.run_dir / RECENT).glob("step-*.ckpt"))[-self.config.average_last :]
        if len(kept) < 2:
            self._call("on_note", f"fewer than two evaluations kept: no {AVERAGED} written")
            return
        payload = averaging.average(kept)
        model = copy.deepcopy(self.model)  # the trained weights stay as they are
        model.load_state_dict(payload["model_state"])
        metrics = self._validate(model)
        payload["metrics"] = _numbers(metrics)
        checkpoint.save(self.run_dir / AVERAGED, payload)
        message = f"saved {self.run_dir / AVERAGED}: the mean of the last {len(kept)} evaluations"
        score, best = metrics.get(self.task.metric), self.progress.best
        if score is not None and best is not None:
            message += f"; valid {self.task.metric} {score:.4f}, best.ckpt {best:.4f}"
        self._call("on_note", message)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """The training state of last.ckpt; one that does not fit this model and run (a
        damaged or crafted file) is one CheckpointError."""
        try:
            self._restore_state(ckpt)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise CheckpointError(
                f"{ckpt['path']}: its training state is damaged, so the run cannot resume "
                f"from it ({first_line(err)[:200]})"
            ) from None

    def _restore_state(self, ckpt: dict[str, Any]) -> None:
        if "optimizer" not in ckpt:
            raise ConfigError(f"{ckpt['path']}: holds no optimizer state; resume from last.ckpt")
        rng, task_state = ckpt["rng"], ckpt["task_state"]
        processes = len(rng) if isinstance(rng, list) else 1
        if processes != distributed.world():
            raise ConfigError(
                f"{ckpt['path']}: this run trained in {processes} processes; resume it in "
                f"{processes} (torchrun --nproc_per_node {processes} ...)"
            )
        if isinstance(rng, list):
            rng, task_state = rng[distributed.rank()], task_state[distributed.rank()]
        self.model.load_state_dict(ckpt["model_state"])
        if self.ema is not None:
            self._restore_average(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.task.load_state_dict(task_state, self.device)
        self.task.sizing = ckpt.get("sizing")
        self.progress = Progress(**ckpt["progress"])
        self.last_eval = {"step": self.progress.step, **ckpt.get("metrics", {})}

    def _restore_average(self, ckpt: dict[str, Any]) -> None:
        """The average from model_state, the trained weights from train_weights."""
        self.ema = [p.detach().clone() for p in self.model.parameters()]
        trained = ckpt.get("train_weights")
        if trained is None:
            raise CheckpointError(
                f"{ckpt['path']}: holds no train_weights to resume a run with --ema from"
            )
        difference = checkpoint.first_difference(self.model.state_dict(), trained, "train_weights")
        if difference is not None:
            raise CheckpointError(
                f"{ckpt['path']}: train_weights do not match the model ({difference})"
            )
        self.model.load_state_dict(trained)

    # -- reporting ----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame) -> None:
        self._stop_signal = signum
        # a second one stops at once
        signal.signal(
            signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        )

    def _log(self, record: dict[str, Any], event: str) -> None:
        if not self.main:
            return
        files.append(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n", "training log")
        self._call(event, record)

    def _call(self, event: str, *args) -> None:
        handler = getattr(self.callbacks, event, None)
        if handler is not None:
            handler(*args)


class _Window:
    """The steps since the last log line: their mean loss and throughput."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.tokens, self.start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.loss, self.steps, self.tokens = self.loss + loss, self.steps + 1, self.tokens + tokens

    def record(self, p: Progress, lr: float, task) -> dict[str, Any]:
        """The log line of the window, which starts a new one."""
        now = time.perf_counter()
        line = {
            "step": p.step,
            "epoch": round(p.epoch + p.batch / task.num_batches(), 4),
            "loss": self.loss / self.steps,
            "lr": lr,
            f"{task.unit}_per_s": self.tokens / max(now - self.start, 1e-9),
            "tokens": p.tokens,
            "elapsed": round(p.elapsed, 2),
        }
        self.reset()
        return line


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    """The figures of an evaluation record, as checkpoints store them."""
    return {k: v for k, v in record.items() if type(v) in (int, float) and k != "step"}


# options that may change when a run is resumed; the rest come from its checkpoint
RESUMABLE = (
    "max_steps",
    "max_epochs",
    "max_time",
    "eval_every",
    "log_every",
    "patience",
    "device",
    "precision",
    "threads",
    "average_last",
)


@dataclass(frozen=True)
class Job:
    """One training run: the task, its data, the run directory, and the settings split
    by where they go. seqtool.api builds it from the options of `seqtool train`."""

    task: str
    train: str
    valid: str | None
    out: Path
    model: dict[str, Any]  # model config fields (num_layers, hidden_size, ...)
    config: dict[str, Any]  # TrainConfig fields
    tokenizer: TokenizerConfig
    options: dict[str, Any]  # the task's own (src_lang, metric, class_weights, ...)
    resume: bool = False
    force: bool = False
    # the options the user set, by option name: a resumed run warns about those that
    # differ from its stored settings and cannot change
    given: dict[str, Any] = dataclasses.field(default_factory=dict)
    record: str = ""  # config.yaml: what repeats this run (written when it starts afresh)


@dataclass(frozen=True)
class Run:
    """What a finished `train` reports: progress, and what its figures count."""

    progress: Progress
    unit: str
    metric: str
    run_dir: Path
    main: bool  # this process wrote the files (always, outside torchrun)


def train(
    job: Job,
    callbacks: Callbacks | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> Run:
    """Train the model `job` describes into its run directory. Without a budget, trains
    for the task's default epochs.

    A run directory that holds a run is refused unless `job.resume` or `job.force`; with
    `force` the old files are moved aside into RUN/.replaced (in one rename) once
    everything has been checked and read, removed when the new run has saved its first
    checkpoint, and put back if it fails before. One process at a time trains in a run
    directory.
    """
    distributed.init(pick_device(job.config.get("device", "auto")))  # join the others
    main = distributed.is_main()
    if not main:
        notify = lambda message: None  # noqa: E731 (one process speaks for all)
    run_dir = job.out
    try:
        # one process writes the files: the first under torchrun
        with _lock(run_dir) if main else contextlib.nullcontext():
            if main:
                _settle_replaced(run_dir)  # what a run killed after --force left
            held = _check_run_dir(run_dir, job.resume, job.force)
            resume_ckpt = None
            if job.resume:
                resume_ckpt = checkpoint.load(run_dir / "last.ckpt", task=job.task)
            if resume_ckpt is not None:
                job = dataclasses.replace(job, valid=_resumed_valid(job, resume_ckpt, notify))
            config = _train_config(job, resume_ckpt, notify)
            pick_precision(config.precision, pick_device(config.device))  # before any work
            request = TrainRequest(
                job.train, job.valid, run_dir, job.tokenizer, job.model, config, resume_ckpt,
                job.options,
            )  # fmt: skip
            if config.threads:
                set_threads(config.threads)
            with allocating("--hidden-size, --embedding-size or --layers"):
                task = tasks.get(job.task).prepare(request, notify)
            with allocating("--hidden-size, --embedding-size or --layers"):
                trainer = Trainer(task, config, run_dir, callbacks, resume_ckpt)
            if _fit_to_budget(task, trainer, config, resume_ckpt, job.given, notify):
                config = task.config  # the budget may choose training settings too (lr)
                trainer = Trainer(task, config, run_dir, callbacks)
            if main and held:
                trainer.replaced = _move_aside(run_dir, held)
            if main and job.record and resume_ckpt is None:
                files.write(run_dir / CONFIG, job.record.encode(), "config")
            try:
                progress = trainer.fit()
            except TrainingInterrupted as stop:
                stop.main, stop.world = trainer.main, distributed.world()
                raise
            finally:
                if main:
                    _settle_replaced(run_dir)
            return Run(progress, task.unit, task.metric, run_dir, trainer.main)
    finally:
        distributed.shutdown()


PROBE_STEPS = 5  # training steps timed per model a task weighs against --max-time


def _fit_to_budget(task, trainer: Trainer, config: TrainConfig, resume_ckpt, given, notify) -> bool:
    """Let a task that can (the generator's size, the classifier's ensemble, the
    translator's dropout and learning rate) fit its model to --max-time, from training
    steps timed on this machine. True when the trainer must be built again (from
    `task.config`, which the task may have replaced): the task rebuilt its model, or a
    probe stepped the trainer's own optimizer (time_steps puts the weights back, not the
    optimizer's moments). Not for a resumed run, which keeps its model; the task leaves
    alone what the user chose (`given`: option names)."""
    fit = getattr(task, "fit_to_budget", None)
    if fit is None or not config.max_time or resume_ckpt is not None:
        return False
    stepped = []  # whether a probe ran on `trainer`

    def step_seconds(model_config) -> float:
        """Seconds per training step of the model `model_config` builds (the task's
        model from then on)."""
        if model_config != task.model_config:
            task.build(model_config)
        probe = trainer if task.model is trainer.model else Trainer(task, config, trainer.run_dir)
        stepped.append(probe is trainer)
        return distributed.on_main(lambda: probe.time_steps(PROBE_STEPS))

    rebuilt = fit(step_seconds, config.max_time, set(given), notify)
    return rebuilt or any(stepped)


def _resumed_valid(job: Job, ckpt: dict[str, Any], notify: Callable[[str], None]) -> str | None:
    """The validation data of a resumed run: what it started with. Without --valid a run
    holds part of --train out, so a resumed run given another would train on other
    data. (Checkpoints written before runs kept it resume as before.)"""
    stored = ckpt.get("data", {}).get("valid")
    if stored is None or job.valid == (stored or None):
        return job.valid
    if job.valid is None:
        notify(f"validating on {stored}, as the run started")
        return stored
    started = stored or "none: part of --train held out"
    raise ConfigError(
        f"--valid {job.valid} is not what the run in {job.out} started with ({started}); "
        "resume with the same, or start over with --force"
    )


def _train_config(
    job: Job, resume_ckpt: dict[str, Any] | None, notify: Callable[[str], None]
) -> TrainConfig:
    if resume_ckpt is None:
        config = TrainConfig(**job.config)
        if not config.has_budget:
            epochs = DEFAULT_EPOCHS[job.task]
            notify(
                f"no budget given: training for {epochs} epochs (set --max-steps, "
                "--max-epochs or --max-time)"
            )
            config = dataclasses.replace(config, max_epochs=epochs)
        if config.max_time and "eval_every" not in job.given:
            # no number of steps suits every machine: plan once the first steps are timed
            config = dataclasses.replace(config, eval_every=None)
        return config
    stored = dict(resume_ckpt["train_config"])
    _warn_ignored(resume_ckpt, job.given)
    stored.update({k: v for k, v in job.given.items() if k in RESUMABLE})
    return TrainConfig.from_dict(stored)


# what a resumed run reads again (the data) rather than settings it keeps
_DATA_OPTIONS = ("train", "valid", "out", "resume", "force", "src_lang", "tgt_lang")


def _warn_ignored(ckpt: dict[str, Any], given: dict[str, Any]) -> None:
    """Warn about the options set by the user that a resumed run cannot change and that
    differ from what it stored (option names: --layers is num_layers)."""
    tokenizer = ckpt.get("tokenizer_config", {})
    model = ckpt["model_config"]
    stored = {
        **ckpt.get("train_config", {}),
        **model,
        **{option: model.get(field) for option, field in OPTION_FIELDS.items()},
        "tokenizer": tokenizer.get("kind"),
        "vocab_size": tokenizer.get("vocab_size"),
        "early_stop_metric": ckpt.get("task_options", {}).get("metric"),
        "class_weights": ckpt.get("task_options", {}).get("class_weights"),
    }
    ignored = sorted(
        k
        for k, v in given.items()
        if k not in RESUMABLE and k not in _DATA_OPTIONS and stored.get(k, object()) != v
    )
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        warn(f"{flags} ignored: a resumed run keeps its stored settings")


def _check_run_dir(run_dir: Path, resume: bool, force: bool) -> list[Path]:
    """The files of an earlier run that `force` will replace."""
    names = ("best.ckpt", "last.ckpt", "metrics.jsonl", RECENT, AVERAGED)
    held = [run_dir / n for n in names]
    held = [path for path in held if path.exists()]
    if resume:
        if not (run_dir / "last.ckpt").exists():
            raise ConfigError(f"{run_dir}: nothing to resume (no last.ckpt); drop --resume")
        return []
    if held and not force:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in held)}); "
            f"add --resume to continue it or --force to start over"
        )
    if held and (run_dir / CONFIG).exists():  # the replaced run's, moved aside with it
        held.append(run_dir / CONFIG)
    return held


@contextlib.contextmanager
def _lock(run_dir: Path):
    """Hold an exclusive lock on RUN/.lock (with this process's id in it) while training:
    two runs writing the same files would ruin both. The kernel releases it when the
    process ends, however it ends."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = (run_dir / ".lock").open("a+")
    except OSError as err:
        raise ConfigError(f"{run_dir}: cannot use it as a run directory ({err.strerror})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "that has just started"
            raise ConfigError(
                f"{run_dir} is in use by process {holder}; wait for it to end or give another --out"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


REPLACED = ".replaced"  # the files of the run that --force replaces, all moved aside
MOVING = ".replacing"  # the same while they are moved one by one, either way


def _move_aside(run_dir: Path, held: list[Path]) -> Path:
    """Move the earlier run's files into RUN/.replaced: one by one into RUN/.replacing,
    then one rename of that folder, the moment the old run counts as replaced. A run
    killed before that rename leaves .replacing, which the next start puts back whole."""
    moving = run_dir / MOVING
    moving.mkdir()
    for path in held:
        os.replace(path, moving / path.name)
    os.replace(moving, run_dir / REPLACED)
    return run_dir / REPLACED


def _settle_replaced(run_dir: Path) -> None:
    """The files of the run that --force replaces: removed once the new run has saved a
    checkpoint, put back when it has not (it failed or was killed before). Putting back
    renames .replaced to .replacing first, so that a kill at any point leaves a state
    that the next start settles the same way."""
    aside, moving = run_dir / REPLACED, run_dir / MOVING
    if aside.is_dir():
        if any((run_dir / name).exists() for name in ("best.ckpt", "last.ckpt")):
            shutil.rmtree(aside)
            return
        os.replace(aside, moving)
    if not moving.is_dir():
        return
    for path in moving.iterdir():
        target = run_dir / path.name
        if target.is_dir():  # the failed run's recent/: the old run's comes back
            shutil.rmtree(target)
        os.replace(path, target)
    moving.rmdir()
