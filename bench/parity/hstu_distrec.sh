#!/usr/bin/env bash
# distrec's side of the HSTU golden curves (docs/parity.md): train experiment=hstu_ml1m on the prepared
# ML-1M split for STEPS steps, full validation every EVAL_EVERY steps, and convert the validation log
# into bench/results/parity/hstu_distrec_seed{SEED}.json (the shape bench/parity/hstu_meta.py writes).
#
# usage: bench/parity/hstu_distrec.sh SEED [STEPS=282] [EVAL_EVERY=47] [extra hydra overrides...]
#   DATA=runs/hstu_ml1m/data (the prepared split, shared with the Meta driver), OUT=bench/results/parity
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${1:?usage: hstu_distrec.sh SEED [STEPS] [EVAL_EVERY] [overrides...]}
STEPS=${2:-282}
EVAL_EVERY=${3:-47}
shift $(( $# < 3 ? $# : 3 ))
DATA=${DATA:-runs/hstu_ml1m/data}
OUT=${OUT:-bench/results/parity}
NAME=${NAME:-parity_hstu_seed${SEED}}
PY=${PY:-.venv/bin/python}
DISTREC=${DISTREC:-.venv/bin/distrec}
cmd=(env OMP_NUM_THREADS=1 "$DISTREC" train experiment=hstu_ml1m name="$NAME" paths.data="$DATA" seed="$SEED"
     train.max_steps="$STEPS" train.eval_every="$EVAL_EVERY" train.patience=0 train.log_every=1
     'eval.ks=[1,5,10,20,50]' progress=false "$@")
echo "${cmd[*]}"
start=$(date +%s.%N)
"${cmd[@]}"
end=$(date +%s.%N)
"$PY" bench/parity/distrec_curve.py "runs/$NAME/train" --out "$OUT/hstu_distrec_seed${SEED}.json" \
    --wall-s "$(echo "$end - $start" | bc)" --command "${cmd[*]}"
