#!/usr/bin/env bash
# One fine-tuning run on a GPU machine that is lent for a short time and sends back only a few small files
# from $OUT. So training stops itself (SIGTERM, which train.py turns into a clean save) after TRAIN_S seconds,
# the run folder stays on the machine, and only the log, the per-epoch metrics and the best weights in
# float16 (11.5 MB for the shipped Lite1 U-Net) come back (docs/TRAINING.md, "On a GPU").
#
# Data: `make gpu-data DATASETS=/path/to/datasets` first (a WebP copy at long side 384, ~33 MB, small
# enough to travel with the working tree), then on the GPU machine, from the repository root:
#     OUT=/some/folder bash training/gpu_run.sh
# Settings by environment: TRAIN_S (default 420); EPOCHS (30, the cosine schedule's length: if the time limit
# comes first, best.pt is the best epoch so far, at a rate not yet decayed); LR, BATCH, WORKERS, SEED;
# SIZE (384: the training size of the shipped model's last runs and the data copy's long side; the model is
# served at 352, which ship.py --image-size sets);
# MODEL (architecture options; by default the INIT weights' own, or train.py's default encoder without INIT);
# INIT (starting weights, by default the shipped model; INIT= empty starts from the encoder's ImageNet weights);
# SERVE_SIZE (352: the input size gpu.pt is served at); VAL (the validation options); EXTRA (more train.py options); PY (python3). Evaluate the weights here
# afterwards, at full resolution: python benchmarks/quality.py ... --checkpoint gpu.pt
set -euo pipefail
: "${OUT:?set OUT to the folder that comes back}"
PY=${PY:-python3}
DATA=${DATA:-gpu_data}
RUN=${RUN:-/tmp/gpu-run}
INIT=${INIT-segmenter/weights/person_unet.pt}
export PYTHONUNBUFFERED=1
# the project's packages without `make setup` (a bare machine with torch): train.py imports them
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for root in ccp eg1800 vikram; do
    [ -d "$DATA/$root/Images" ] || { echo "gpu_run.sh: no $DATA/$root/Images; run make gpu-data first" >&2; exit 2; }
done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt" || true
# shellcheck disable=SC2086
timeout -s TERM -k 60 "${TRAIN_S:-420}" "$PY" training/train.py \
    --data "$DATA/ccp" --data "$DATA/eg1800" --data "$DATA/vikram" ${VAL:---val-list training/splits/shared_val.txt} \
    ${INIT:+--init "$INIT"} ${MODEL:-} \
    --epochs "${EPOCHS:-30}" --batch-size "${BATCH:-32}" --lr "${LR:-8e-4}" --weight-decay 0.01 --loss bce_dice \
    --ema 0.999 --image-size "${SIZE:-384}" --amp --paste-prob 0.3 --crop-prob 0.3 --side-prob 0.1 --workers "${WORKERS:-14}" \
    --seed "${SEED:-10}" --preview-count 2 --out "$RUN" --no-export ${EXTRA:-} 2>&1 | tee "$OUT/train.log" || true
cp "$RUN/metrics.jsonl" "$OUT/metrics.jsonl"
"$PY" training/ship.py "$RUN/best.pt" --half --image-size "${SERVE_SIZE:-352}" --to "$OUT/gpu.pt"
