"""--quantize int8: outputs close to fp32 on tiny models, the commands end to end, and
the refusal off the CPU. Tiny models are all below MIN_WEIGHTS, so most tests lower it
to 0 (`every_layer`) to run every int8 path."""

import copy
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import seqtool
from seqtool import inference
from seqtool import quantize as quantization
from seqtool.cli import cli
from seqtool.config import ClassifierConfig, GeneratorConfig
from seqtool.errors import ConfigError
from seqtool.models.classifier import build_model
from seqtool.models.generator import GeneratorModel
from seqtool.quantize import Int8Affine, quantize
from seqtool.tokenizer import BOS_ID
from tests.conftest import TEXT
from tests.test_classifier import sentiment_lines
from tests.test_cli import error_line
from tests.test_translator import date_lines


@pytest.fixture
def every_layer(monkeypatch):
    monkeypatch.setattr(quantization, "MIN_WEIGHTS", 0)


def train(tmp_path_factory, task: str, train: list[str], valid: list[str], *options) -> str:
    data = tmp_path_factory.mktemp(task)
    for name, lines in (("train.txt", train), ("valid.txt", valid)):
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = [
        "train", task, "--train", data / "train.txt", "--valid", data / "valid.txt",
        "--out", data / "run", "--warmup-steps", 0, "--batch-size", 16, *options,
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return str(data / "run")


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory) -> str:
    # three lines repeated: 150 steps learn them, so that greedy text is not a near tie
    lines = TEXT.splitlines()
    return train(
        tmp_path_factory, "generator", lines, lines[:20], "--hidden-size", 32,
        "--embedding-size", 16, "--layers", 1, "--seq-len", 32, "--max-steps", 150,
        "--eval-every", 150, "--lr", 0.01,
    )  # fmt: skip


@pytest.fixture(scope="module")
def translator_run(tmp_path_factory) -> str:
    train_lines = [line.rstrip("\n") for line in date_lines(300, 0)]
    valid_lines = [line.rstrip("\n") for line in date_lines(20, 1)]
    return train(
        tmp_path_factory, "translator", train_lines, valid_lines, "--hidden-size", 32,
        "--embedding-size", 16, "--max-steps", 30, "--eval-every", 30, "--tokenizer", "char",
        "--lr", 0.01,
    )  # fmt: skip


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> str:
    return train(
        tmp_path_factory, "classifier", sentiment_lines(200, 0), sentiment_lines(40, 1),
        "--hidden-size", 16, "--embedding-size", 16, "--max-steps", 20, "--eval-every", 20,
        "--vocab-size", 300, "--pooling", "attention",
    )  # fmt: skip


def _affines(step) -> list:
    return [a for layer in step.layers for a in (layer if isinstance(layer, tuple) else [layer])]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_generator_int8_log_probs_close_to_fp32(cell, every_layer):
    torch.manual_seed(0)
    config = GeneratorConfig(vocab_size=40, cell=cell, hidden_size=32, embedding_size=16)
    fp32 = GeneratorModel(config).eval()
    int8 = quantize(copy.deepcopy(fp32), "int8").eval()  # eval() keeps the int8 step
    assert not isinstance(int8.out, nn.Linear)
    assert all(isinstance(a, Int8Affine) for a in _affines(int8.rnn.step_path))
    tokens = torch.randint(0, 40, (2, 12))
    with torch.inference_mode():
        (logits, state), (q_logits, _) = fp32.encode(tokens), int8.encode(tokens)
        step, _ = fp32.decode_step(tokens[:, 0], state)
        q_step, _ = int8.decode_step(tokens[:, 0], state)
    for a, b in ((logits, q_logits), (step, q_step)):
        assert (a.log_softmax(-1) - b.log_softmax(-1)).abs().max() < 0.05


def test_generator_int8_greedy_text_as_fp32(generator_run, every_layer):
    fp32 = seqtool.load(generator_run, device="cpu")
    int8 = seqtool.load(generator_run, device="cpu", quantize="int8")
    for prompt in ("the ", "a st", "to be"):
        a, b = (m.generate(prompt, length=60, temperature=0) for m in (fp32, int8))
        assert sum(x == y for x, y in zip(a, b, strict=True)) >= 54, (a, b)


def test_small_products_stay_fp32():
    torch.manual_seed(0)
    small = quantize(GeneratorModel(GeneratorConfig(vocab_size=40, hidden_size=32)).eval(), "int8")
    assert isinstance(small.out, nn.Linear) and isinstance(small.rnn, nn.LSTM)
    assert not any(isinstance(a, Int8Affine) for a in _affines(small.rnn.step_path))
    config = GeneratorConfig(vocab_size=600, hidden_size=128, embedding_size=64)
    large = quantize(GeneratorModel(config).eval(), "int8")
    assert not isinstance(large.out, nn.Linear) and not isinstance(large.rnn, nn.LSTM)
    assert all(isinstance(a, Int8Affine) for a in _affines(large.rnn.step_path))


@pytest.mark.parametrize("pooling", ["max", "last", "attention"])
def test_classifier_int8_probabilities_close_to_fp32(pooling, every_layer):
    torch.manual_seed(0)
    config = ClassifierConfig(
        vocab_size=30, labels=("a", "b", "c"), embedding_size=8, hidden_size=16,
        pooling=pooling, members=2,
    )  # fmt: skip
    fp32 = build_model(config).eval()
    int8 = quantize(copy.deepcopy(fp32), "int8")
    tokens, lengths = torch.randint(1, 30, (4, 9)), torch.tensor([9, 7, 3, 1])
    with torch.inference_mode():
        p, q = (m(tokens, lengths)[0].softmax(-1) for m in (fp32, int8))
    assert (p - q).abs().max() < 0.02


def test_translator_int8_close_to_fp32(translator_run, every_layer):
    fp32 = seqtool.load(translator_run, device="cpu")
    int8 = seqtool.load(translator_run, device="cpu", quantize="int8")
    assert int8.info["quantize"] == "int8" and "quantize" not in fp32.info
    src, lengths = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]), torch.tensor([4, 3])
    with torch.inference_mode():
        (memory, state), (q_memory, q_state) = (m.model.encode(src, lengths) for m in (fp32, int8))
        tokens = torch.full((2,), BOS_ID)
        for _ in range(8):  # both along fp32's greedy path
            log_probs, state, _ = fp32.model.decode_step(tokens, state, memory)
            q_log_probs, q_state, _ = int8.model.decode_step(tokens, q_state, q_memory)
            assert (log_probs - q_log_probs).abs().max() < 0.05
            tokens = log_probs.argmax(-1)
    # an untrained model's translations hold near ties, which int8 may break otherwise
    sources = [line.split("\t")[0] for line in date_lines(20, 1)]
    for beam_size in (1, 3):
        a, b = (m.translate(sources, beam_size=beam_size) for m in (fp32, int8))
        same = [(x.score, y.score) for x, y in zip(a, b, strict=True) if x.text == y.text]
        assert len(same) >= 12 and all(abs(x - y) < 0.1 for x, y in same)


def test_generate_classify_translate_evaluate_with_int8(
    run_cli, generator_run, classifier_run, translator_run, every_layer
):
    result = run_cli("generate", generator_run, "--prompt", "the ", "--length", 20, "--seed", 1,
                     "--quantize", "int8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the ") and len(result.stdout) == len("the ") + 20 + 1
    texts = "a good film\nthe plot was awful\n"
    plain = run_cli("classify", classifier_run, input=texts)
    result = run_cli("classify", classifier_run, "--quantize", "int8", input=texts)
    assert result.exit_code == 0, result.output
    assert result.stdout == plain.stdout
    result = run_cli("translate", translator_run, "--quantize", "int8", input="21.3.1948\n\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    data = Path(generator_run).parent / "valid.txt"
    result = run_cli("evaluate", generator_run, "--data", data, "--json", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "bits_per_char" in result.stdout


def test_int8_off_the_cpu_is_refused(run_cli, generator_run, monkeypatch):
    # no GPU here: the device is taken as asked, and quantize refuses it before use
    monkeypatch.setattr(inference, "pick_device", lambda name: torch.device(name))
    result = run_cli("generate", generator_run, "--device", "cuda", "--quantize", "int8")
    assert error_line(result) == (
        "Error: --quantize int8 runs on the CPU only (the device is cuda); add --device cpu"
    )
    with pytest.raises(ConfigError, match="choose one of none, int8"):
        seqtool.load(generator_run, device="cpu", quantize="int4")


def test_a_torch_without_dynamic_int8_refuses_quantize_in_one_line(
    run_cli, generator_run, monkeypatch
):
    """torch has announced the removal of torch.ao.quantization; on a torch without it,
    --quantize int8 is refused, and everything else works."""
    assert quantization.available()  # the torch these tests run on has it
    monkeypatch.setattr(quantization, "available", lambda: False)
    result = run_cli("generate", generator_run, "--quantize", "int8", "--length", 5)
    assert error_line(result) == (
        f"Error: --quantize int8 needs torch.ao.quantization's dynamic int8, which torch "
        f"{torch.__version__} no longer has; use torch 2.13 or older, or drop --quantize"
    )
    assert run_cli("generate", generator_run, "--length", 5).exit_code == 0


def test_loading_int8_shows_no_torch_warnings(generator_run, every_layer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seqtool.load(generator_run, device="cpu", quantize="int8").generate(length=5)
    assert not caught, [str(w.message) for w in caught]


def test_inspect_refuses_a_quantized_model(generator_run):
    model = seqtool.load(generator_run, device="cpu", quantize="int8")
    with pytest.raises(ConfigError, match="^inspect reads the fp32 weights: load the run wi"):
        model.inspect("the ")
