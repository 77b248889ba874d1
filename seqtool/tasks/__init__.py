"""Tasks: what each kind of model reads, builds, computes as loss and reports as metrics.

The one training loop (seqtool.training) drives any object with this shape:

    name: str                     "generator", "classifier", "translator"
    model: nn.Module
    unit: str                     what the throughput counts ("chars", "tokens")
    metric: str                   the validation key that picks best.ckpt
    higher_is_better: bool
    num_batches() -> int          training batches per epoch
    start_epoch(epoch)            called before the first batch of each epoch
    train_loss(model, index, device) -> (mean loss, tokens in the batch)
    evaluate(model, device) -> dict of validation metrics (empty without validation data)
    state_dict() / load_state_dict(state)   what a resumed run must carry over
    checkpoint_info() -> dict     task, model_config, tokenizers: what inference needs
"""
