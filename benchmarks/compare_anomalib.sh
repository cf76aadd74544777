#!/usr/bin/env bash
# Side by side with anomalib on the same data, image size and backbone, one after the other on this machine.
#
#   benchmarks/compare_anomalib.sh HARNESS_DIR ANOMALIB_PYTHON ROOT CATEGORY IMAGE_SIZE MODELS [OUT_DIR]
#
# HARNESS_DIR holds the anomalib harness (run.py, not part of this repository); ANOMALIB_PYTHON is the python
# of a venv with anomalib installed; ROOT/CATEGORY an MVTec-layout data set. Both sides use random backbone
# weights (no downloads) and one process per model, so peak RSS is per model. Environment variables:
#   EPOCHS      epochs of trained models (STFPM, FastFlow ...) on both sides (default 3: the harness's default)
#   SEEDS       space-separated seeds; each runs both sides and writes *_s<seed>.json (default: one run, seed 42)
#   ADCORE_SET  extra options for our side, e.g. "conv3x3_only=false batch_size=32" (anomalib's model defaults)
# Summarise several seeds with `python benchmarks/summarize_seeds.py OUT_DIR`.
set -euo pipefail
harness=$1 anomalib_python=$2 root=$3 category=$4 size=$5 models=$6 out=${7:-benchmarks/results}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
epochs=${EPOCHS:-3}
sets=()
for kv in ${ADCORE_SET:-}; do sets+=(--set "$kv"); done
for seed in ${SEEDS:-42}; do
    tag="${category}_${size}px"
    [ -n "${SEEDS:-}" ] && tag="${tag}_${models//,/-}_s${seed}"
    (cd "$harness" && "$anomalib_python" run.py --root "$root" --category "$category" --image-size "$size" \
        --models "$models" --epochs "$epochs" --seed "$seed" --patchcore-malloc-fix --tag "anomalib_$tag")
    cp "$harness/results/anomalib_$tag.json" "$out/anomalib_$tag.json"
    python "$here/benchmarks/run.py" --dataset mvtec --root "$root" --category "$category" --image-size "$size" \
        --models "$models" --pretrained false --set num_epochs="$epochs" --set seed="$seed" ${sets[@]+"${sets[@]}"} \
        --threads 2 --json "$out/adcore_$tag.json"
done
