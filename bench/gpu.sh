#!/usr/bin/env bash
# GPU check, from the repository root of a machine with a CUDA GPU (at most ~8 minutes,
# no downloads). It needs torch, sentencepiece, click, rich and sacrebleu installed,
# and the shared corpora and reference scripts copied into the checkout:
#
#   make gpu-data                 # here: copies ../shared/{corpora,bench} to gpu-data/
#   bash bench/gpu.sh [OUT_DIR]   # there: figures in OUT_DIR/gpu.md (default gpu-out/)
#
# DEVICE=cpu BUDGET=10s REF_SECONDS=5 bash bench/gpu.sh /tmp/gpu-smoke  runs it through
# on a CPU in about two minutes, to check the script itself.
#
# Every figure is measured beside its reference in the same run on the same card.
set -euo pipefail
DATA=${GPU_DATA:-gpu-data}
OUT=${1:-${OUT:-gpu-out}}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-2m}
REF_SECONDS=${REF_SECONDS:-60}
SHAKES=$DATA/corpora/tinyshakespeare
M30K=$DATA/corpora/multi30k
mkdir -p "$OUT"
test -f "$SHAKES/train.txt" -a -f "$M30K/train.de" -a -f "$DATA/bench/ref_charlstm.py" || {
    echo "gpu.sh: $DATA/ lacks the corpora or reference scripts; run make gpu-data" >&2; exit 1; }
# offline: no build environment to fetch
pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.txt" 2>&1 || {
    cat "$OUT/pip.txt" >&2; exit 1; }
PY=python
card=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if '$DEVICE' == 'cuda' else 'cpu')")
echo "card: $card" | tee "$OUT/log.txt"

# 1. generator training, hidden 512 (the CPU throughput model), 2 minutes against the reference
seqtool train generator --train "$SHAKES/train.txt" --valid "$SHAKES/valid.txt" \
    --out "$OUT/shakes" --force --device $DEVICE --hidden-size 512 --layers 2 \
    --embedding-size 64 --batch-size 64 --seq-len 128 --max-time $BUDGET --eval-every 500 --log-every 5 \
    2>>"$OUT/log.txt"
$PY "$DATA/bench/ref_charlstm.py" --train "$SHAKES/train.txt" --valid "$SHAKES/valid.txt" \
    --device $DEVICE --seconds $REF_SECONDS > "$OUT/ref_train.txt"

# 2. sampling 2000 characters at batch 1
seqtool generate "$OUT/shakes" --device $DEVICE --length 2000 --seed 1 > /dev/null  # warm-up
start=$(date +%s.%N)
seqtool generate "$OUT/shakes" --device $DEVICE --length 2000 --seed 1 > "$OUT/sample.txt"
end=$(date +%s.%N)
$PY "$DATA/bench/ref_sample.py" --device $DEVICE --length 2000 > "$OUT/ref_sample.txt"
$PY bench/run.py probe-sample "$OUT/shakes" 2000 1 "$DEVICE" > "$OUT/probe_sample.json"

# 3. translator on Multi30k for 2 minutes, BLEU on test2016 and speed at beam 5
seqtool train translator --train "$M30K/train" --valid "$M30K/valid" --src-lang de \
    --tgt-lang en --out "$OUT/de-en" --force --device $DEVICE --max-time $BUDGET \
    --log-every 10 2>>"$OUT/log.txt"
seqtool evaluate "$OUT/de-en" --data "$M30K/test2016" --src-lang de --tgt-lang en \
    --beam-size 5 --device $DEVICE --json > "$OUT/test2016.json"
start_t=$(date +%s.%N)
seqtool translate "$OUT/de-en" "$M30K/test2016.de" --beam-size 5 --device $DEVICE > "$OUT/test2016.hyp"
end_t=$(date +%s.%N)

$PY - "$OUT" "$card" "$start" "$end" "$start_t" "$end_t" <<'PYEOF' | tee "$OUT/gpu.md"
import json, re, statistics, sys
out, card, s0, s1, t0, t1 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
def kv(path):
    text = open(path).read().strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-+\d.eE]+)", text)}
logs = [json.loads(l) for l in open(f"{out}/shakes/metrics.jsonl") if '"chars_per_s"' in l]
train = statistics.median(r["chars_per_s"] for r in logs[1:] or logs)
ref_train = kv(f"{out}/ref_train.txt")["chars_per_s"]
probe = json.loads(open(f"{out}/probe_sample.json").read().strip().splitlines()[-1])
ref_sample = kv(f"{out}/ref_sample.txt")["chars_per_s"]
test = json.loads(open(f"{out}/test2016.json").read())
tlogs = [json.loads(l) for l in open(f"{out}/de-en/metrics.jsonl") if '"tokens_per_s"' in l]
rows = [
    ("generator training, 2x512 LSTM, chars/s", train, ref_train),
    ("sampling 2000 chars at batch 1 (seqtool.decoding.sample), chars/s", probe["chars_per_s"], ref_sample),
    ("`seqtool generate --length 2000`, whole process, chars/s", 2000 / (s1 - s0), ref_sample),
    ("translator training, target tokens/s (median)", statistics.median(r["tokens_per_s"] for r in tlogs), None),
    ("translator test2016 BLEU after the budget, beam 5", test["bleu"], None),
    ("`seqtool translate` test2016 beam 5, whole process, sentences/s", 1000 / (t1 - t0), None),
]
print(f"GPU: {card}\n\n| figure | seqtool | reference | ratio |\n|---|---:|---:|---:|")
for name, value, ref in rows:
    ratio = f"{value / ref:.2f}" if ref else "-"
    print(f"| {name} | {value:,.1f} | {ref if ref is None else f'{ref:,.1f}'} | {ratio} |")
PYEOF
