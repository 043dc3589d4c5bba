#!/usr/bin/env bash
# CI quality gate: fail the job when a fine-tuned model scores below a floor on held-out rows,
# or when it scores worse than the base model it was trained from.
#
#   examples/ci_gate.sh runs/gsm8k Qwen/Qwen2.5-0.5B-Instruct
#
# Settings (environment): DATA (held-out rows), GRADER (grader file), MIN_SCORE (floor for the
# fine-tuned model's mean reward), LIMIT (rows to evaluate), RFT (how to run rft), RFT_EVAL_ARGS
# (more `rft eval` flags, e.g. "--samples 4 --max-new-tokens 256").
# Exit codes follow `rft eval`: 0 passed, 1 gate failed (or invalid data), 2 usage error.
set -uo pipefail

MODEL=${1:?usage: ci_gate.sh MODEL_OR_RUN_DIR [BASE_MODEL]}
BASE=${2:-}
DATA=${DATA:-data/test.jsonl}
GRADER=${GRADER:-grader.yaml}
MIN_SCORE=${MIN_SCORE:-0.5}
LIMIT=${LIMIT:-200}
RFT=${RFT:-rft}
OUT=${OUT:-eval-artifacts}
mkdir -p "$OUT"

models=(--model "$MODEL")
if [[ -n "$BASE" ]]; then models+=(--model "$BASE"); fi

# The first --model is the one --min-score gates; the others are only compared.
$RFT eval "${models[@]}" --data "$DATA" --grader "$GRADER" --limit "$LIMIT" \
    --min-score "$MIN_SCORE" --format json --output "$OUT/samples.jsonl" ${RFT_EVAL_ARGS:-} > "$OUT/eval.json"
status=$?

case $status in
  0) echo "gate passed: mean reward >= $MIN_SCORE" ;;
  1) echo "gate FAILED: mean reward below $MIN_SCORE, or the data is invalid (see the messages above)" >&2
     exit 1 ;;
  2) echo "usage error: check the flags, the model path, the data and the grader file" >&2
     exit 2 ;;
  *) echo "rft eval stopped with exit code $status" >&2
     exit "$status" ;;
esac

# Optional second gate: the fine-tuned model must not be worse than the base model.
if [[ -n "$BASE" ]]; then
  python3 - "$OUT/eval.json" <<'PY' || exit 1
import json, sys
tuned, base = json.load(open(sys.argv[1]))["models"][:2]
print(f"fine-tuned {tuned['mean_reward']:.4f} vs base {base['mean_reward']:.4f}")
sys.exit(0 if tuned["mean_reward"] >= base["mean_reward"] else 1)
PY
fi
