#!/usr/bin/env bash
# HISTORICAL: the stand-in checkpoints that configs/ has not yet replaced were trained by this script at commit
# a7fdac2 (constant lr, no validation split, no EMA, clipping of the summed NLL). The training CLI has changed since;
# to reproduce those checkpoints, run it from that commit (git worktree add /tmp/old a7fdac2). New checkpoints are
# trained from configs/*.json: python -m pixelrnn.train --config configs/NAME.json --out checkpoints/NAME
# Retrains the shipped CPU checkpoints (2 CPU cores, two queues of one thread each).
# Usage: bash checkpoints/train_cpu.sh [DATA_DIR] [STAGE]   (default: ../shared/data, both stages)
# Stage 1 trains every model; stage 2 resumes the Diagonal BiLSTM and the CIFAR-10 model.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
stage=${2:-all}
py=${PYTHON:-python}
mkdir -p runs
train() { OMP_NUM_THREADS=1 "$py" -m pixelrnn.train --data-dir "$data" --no-progress --batch-size 32 --lr 2e-3 "$@"; }
diagonal=(--arch diagonal_bilstm --dataset binarized_mnist --hidden 16 --layers 4 --out checkpoints/binarized-mnist-diagonal-bilstm)
cifar=(--arch pixelcnn --dataset cifar10 --conditional --cifar-parts a --hidden 32 --layers 6 --out checkpoints/cifar10-pixelcnn-conditional)
if [ "$stage" = all ] || [ "$stage" = 1 ]; then
  (
    train "${diagonal[@]}" --minutes 14
    train --arch pixelcnn --dataset binarized_mnist --hidden 16 --layers 8 --minutes 8 \
          --out checkpoints/binarized-mnist-pixelcnn
    train --arch row_lstm --dataset binarized_mnist --hidden 16 --layers 4 --factor 2 --minutes 8 \
          --out checkpoints/binarized-mnist-multiscale-row-lstm
  ) > runs/queue_a.log 2>&1 &
  (
    train --arch row_lstm --dataset binarized_mnist --hidden 16 --layers 4 --minutes 8 \
          --out checkpoints/binarized-mnist-row-lstm
    train --arch row_lstm --dataset mnist --conditional --hidden 16 --layers 4 --minutes 10 \
          --out checkpoints/mnist-row-lstm-conditional
    train "${cifar[@]}" --minutes 12
  ) > runs/queue_b.log 2>&1 &
  wait
fi
if [ "$stage" = all ] || [ "$stage" = 2 ]; then
  train "${diagonal[@]}" --minutes 25 --resume > runs/queue_a2.log 2>&1 &
  train "${cifar[@]}" --minutes 25 --resume > runs/queue_b2.log 2>&1 &
  wait
fi
