import pytest
import torch

from seqtool.config import GeneratorConfig
from seqtool.models import recurrent
from seqtool.models.dropout import Dropout
from seqtool.models.generator import GeneratorModel
from seqtool.models.recurrent import RecurrentStep, make_rnn, run_layers


@pytest.mark.parametrize("batch", [1, 3])  # one row and several take different products
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_single_step_matches_the_fused_layer(cell, batch):
    torch.manual_seed(0)
    rnn = make_rnn(cell, 6, 8, num_layers=3).eval()
    x = torch.randn(batch, 5, 6)
    expected, expected_state = rnn(x)
    step = RecurrentStep(rnn)
    zeros = torch.zeros(3, batch, 8)
    state = (zeros, zeros) if cell == "lstm" else zeros
    outputs = []
    for t in range(5):
        out, state = step.step(x[:, t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs, 1), expected)
    if cell == "lstm":
        torch.testing.assert_close(state[1], expected_state[1])


@pytest.mark.parametrize("tie", [False, True])
def test_generator_shapes_and_decode_step(tie):
    torch.manual_seed(0)
    model = GeneratorModel(
        GeneratorConfig(
            vocab_size=11, embedding_size=4, hidden_size=8, num_layers=2, tie_embeddings=tie
        )
    ).eval()
    tokens = torch.randint(0, 11, (3, 7))
    logits, state = model(tokens)
    assert logits.shape == (3, 7, 11)
    assert state[0].shape == (2, 3, 8)
    # priming with forward, then stepping, gives the same logits as one forward pass
    primed, state = model(tokens[:, :4])
    stepped = []
    for t in range(4, 7):
        step_logits, state = model.decode_step(tokens[:, t], state)
        stepped.append(step_logits)
    torch.testing.assert_close(torch.stack(stepped, 1), logits[:, 4:])
    if tie:
        assert model.out.weight is model.embedding.weight


def test_generator_starts_from_the_unigram_distribution(tmp_path):
    import numpy as np

    from seqtool.data import TokenArray
    from seqtool.tasks.generator import unigram_log_probs

    ids = np.array([4, 4, 4, 5], dtype=np.uint16)
    log_probs = unigram_log_probs(TokenArray(ids, 4, np.bincount(ids, minlength=8)), 8)
    assert log_probs.exp().sum().item() == pytest.approx(1.0)
    assert log_probs[4] > log_probs[5] > log_probs[7]  # seen often, seen once, never seen
    model = GeneratorModel(GeneratorConfig(vocab_size=8, embedding_size=4, hidden_size=8))
    model.init_output_bias(log_probs)
    assert torch.equal(model.out.bias.detach(), log_probs)


def test_encoding_counts_every_id_once(tmp_path):
    """The counts the unigram start needs come with the cache, so nothing reads all the
    ids of a large corpus again (that maps every page of the cache into memory)."""
    import numpy as np

    from seqtool.data import encode_file
    from seqtool.tokenizer import Tokenizer

    text = tmp_path / "t.txt"
    text.write_text("abracadabra\n" * 500 + "zebra\n")
    tokenizer, _ = Tokenizer.train(["abracadabra", "zebra"], "char")
    first = encode_file(text, tokenizer, tmp_path / "c.ids")
    again = encode_file(text, tokenizer, tmp_path / "c.ids")  # from the cache
    expected = np.bincount(np.asarray(first.ids), minlength=tokenizer.vocab_size)
    assert np.array_equal(first.counts, expected) and np.array_equal(again.counts, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_a_share_p_and_scales_the_rest(dtype):
    torch.manual_seed(0)
    layer = Dropout(0.3)
    x = torch.rand(64, 64, 128).add(0.5).to(dtype).requires_grad_()
    torch.manual_seed(1)
    y = layer(x)
    dropped = y == 0
    assert y.dtype == dtype and y.shape == x.shape
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.01)
    rtol = 1e-4 if dtype == torch.float32 else 1e-2  # the rate is kept to 1/32768
    kept = x[~dropped].float() / 0.7
    torch.testing.assert_close(y[~dropped].float(), kept, rtol=rtol, atol=0)
    y.float().sum().backward()  # the gradient passes the kept elements only, scaled
    expected = torch.where(dropped, 0.0, 1 / 0.7)
    torch.testing.assert_close(x.grad.float(), expected, rtol=rtol, atol=0)
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x), y)  # the seed decides the mask
    assert torch.equal(layer.eval()(x), x)  # nothing dropped outside training


def test_dropout_of_odd_sizes_and_rates():
    x = torch.ones(3, 7, 5)  # not a multiple of the four elements a draw serves
    assert torch.equal(Dropout(1e-9)(x), x)  # a rate under 1/32768 drops nothing
    nearly_all = Dropout(1 - 1e-9)(x)
    assert torch.isfinite(nearly_all).all() and nearly_all.sum() < 105


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layers_run_one_by_one_compute_what_the_fused_layer_does(cell, batch_first, monkeypatch):
    torch.manual_seed(0)
    rnn = make_rnn(cell, 6, 8, num_layers=3, dropout=0.5, batch_first=batch_first).train()
    x = torch.randn(4, 5, 6, requires_grad=True)
    h = torch.randn(3, 4 if batch_first else 5, 8)
    state = (h, h.flip(0)) if cell == "lstm" else h
    # the dropout between layers aside, the same outputs, final state and gradients
    monkeypatch.setattr(recurrent, "dropout", lambda x, p, training: x)
    out, final = run_layers(rnn, x, state)
    rnn.dropout = 0.0
    expected, expected_final = rnn(x, state)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, expected_final)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(expected.sum(), x)[0])
    rnn.dropout = 0.5
    monkeypatch.undo()
    dropped, _ = run_layers(rnn, x, state)
    assert not torch.allclose(dropped, expected)  # with it, the outputs differ
    torch.testing.assert_close(run_layers(rnn.eval(), x, state)[0], rnn(x, state)[0])
    with pytest.raises(RuntimeError, match="hidden"):  # shapes checked before the kernel
        run_layers(rnn.train(), x, h[:, :2] if cell != "lstm" else (h[:, :2], h[:, :2]))
