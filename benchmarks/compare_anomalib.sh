#!/usr/bin/env bash
# Side by side with anomalib on the same data, image size and backbone, one after the other on this machine.
#
#   benchmarks/compare_anomalib.sh HARNESS_DIR ANOMALIB_PYTHON ROOT CATEGORY IMAGE_SIZE MODELS [OUT_DIR]
#
# HARNESS_DIR holds the anomalib harness (run.py, not part of this repository); ANOMALIB_PYTHON is the python
# of a venv with anomalib installed; ROOT/CATEGORY an MVTec-layout data set. Both sides use random backbone
# weights (no downloads) and one process per model, so peak RSS is per model. Trained models (STFPM, FastFlow ...)
# run EPOCHS epochs on both sides (environment variable, default 3: the harness's default).
set -euo pipefail
harness=$1 anomalib_python=$2 root=$3 category=$4 size=$5 models=$6 out=${7:-benchmarks/results}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
tag="${category}_${size}px"
epochs=${EPOCHS:-3}
(cd "$harness" && "$anomalib_python" run.py --root "$root" --category "$category" --image-size "$size" \
    --models "$models" --epochs "$epochs" --patchcore-malloc-fix --tag "anomalib_$tag")
cp "$harness/results/anomalib_$tag.json" "$out/anomalib_$tag.json"
python "$here/benchmarks/run.py" --dataset mvtec --root "$root" --category "$category" --image-size "$size" \
    --models "$models" --pretrained false --set num_epochs="$epochs" --threads 2 --json "$out/adcore_$tag.json"
