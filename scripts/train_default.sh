#!/usr/bin/env bash
# Recipe of the embedded default model (make train-default): light encoder, RGB, 0.5 m.
# 8 synthetic scenes + SpaceNet-1 Rio img50..55 (labelled) and img58..60 (building-free), read by
# path from ../shared/data; img56, img57, img61, img62 stay held out for evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-resources/models/default.safetensors}
EPOCHS=${EPOCHS:-30}
STEPS=${STEPS:-100}
WORK=build/train-default
RIO=../shared/data/spacenet1_rio
ID=013022223130_Public_img
mkdir -p "$WORK" "$(dirname "$OUT")"
$PY -m ternaus_backend.cli synth --out "$WORK/synth" --count 8 --seed 7 --size 512 --no-ms >/dev/null
ARGS=()
for f in "$WORK"/synth/*_rgb.tif; do ARGS+=(--rgb "$f" --labels "${f%_rgb.tif}_labels.geojson"); done
if [ -d "$RIO" ]; then
  for i in 50 51 52 53 54 55 58 59 60; do
    ARGS+=(--rgb "$RIO/images/3band_$ID$i.tif" --labels "$RIO/derived_polygons/$ID${i}_mask_components.geojson")
  done
else
  echo "note: $RIO not found; training on synthetic scenes only" >&2
fi
$PY -m ternaus_backend.cli train "${ARGS[@]}" --allow-empty-labels --encoder resnet_light \
  --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --batch-size 8 --crop 192 --lr 2e-3 --seed 0 \
  --out "$OUT"
# Instance thresholds (body probability, minimum area) tuned on the same training rasters.
TUNE=()
for ((i = 0; i < ${#ARGS[@]}; i += 4)); do TUNE+=(--rgb "${ARGS[i+1]}" --labels "${ARGS[i+3]}"); done
$PY scripts/tune_thresholds.py --model "$OUT" "${TUNE[@]}"
