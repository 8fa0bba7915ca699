#!/usr/bin/env bash
# Does the value table's fixed lr decide what stage 2 forgets? (issue #30; result in docs/reproduce.md, section 7)
# On the demo's world (seed 0): distil the memory student, fine-tune it with the demo's stage-2 recipe at each value lr,
# then score the teacher, the distilled student and each fine-tuned student on short- and long-caption retrieval and
# zero-shot shape. About 1.5 hours on 2 quiet CPU cores.
#   bash scripts/experiments/stage2_value_lr.sh runs/value-lr 1e-5 1e-3 5e-2
set -euo pipefail
OUT=${1:?usage: $0 OUT VALUE_LR...}; shift
PY=${PYTHON:-python}
W=$OUT/world; L=$OUT/logs
[ -f "$W/world.json" ] || $PY -m memclip_train.synth --out "$W" --seed 0 --workers 1 --train 4000 --val 200 \
    --retrieval 1000 --segmentation 100 --pairs-per-pattern 30 --long-order salience --no-progress
COMMON=(--train-data "$W/train/{000000..000003}.tar" --val-data "$W/val/000000.tar" --precision fp32 --workers 1
        --seed 0 --logs "$L" --log-every-n-steps 50 --save-every-n-steps 50 --no-progress)
[ -f "$L/student-distill/final/memclip_config.json" ] || $PY -m memclip_train.main "${COMMON[@]}" \
    --name student-distill --epochs 3 --lr 2e-3 --batch-size 64 --warmup 20 --wd 0.05 --value-lr 5e-3 \
    --model ViT-Tiny-8-mem --distill --pretrained synth
MODELS=(--model ViT-Tiny-8 --pretrained synth --label teacher
        --model ViT-Tiny-8-mem --pretrained "$L/student-distill/final" --label distilled)
for VLR in "$@"; do
  NAME=student-finetune-vlr$VLR
  [ -f "$L/$NAME/final/memclip_config.json" ] || $PY -m memclip_train.main "${COMMON[@]}" --name "$NAME" \
      --epochs 4 --lr 5e-4 --batch-size 64 --warmup 20 --wd 0.05 --model ViT-Tiny-8-mem \
      --pretrained "$L/student-distill/final" --long-short-alpha 0.8 --caption-key txt --long-caption-key json.long \
      --trainable visual --value-lr "$VLR"
  MODELS+=(--model ViT-Tiny-8-mem --pretrained "$L/$NAME/final" --label "value lr $VLR")
done
$PY -m memclip_train.eval retrieval --dataset synth-short --data-root "$W" --dataset synth-long --data-root "$W" \
    --out "$OUT/eval" --no-progress "${MODELS[@]}"
$PY -m memclip_train.eval zeroshot --dataset synth-shapes --data-root "$W" --out "$OUT/eval" --no-progress "${MODELS[@]}"
