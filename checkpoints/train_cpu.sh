#!/usr/bin/env bash
# Retrains the shipped CPU checkpoints (2 CPU cores, two queues of one thread each).
# Usage: bash checkpoints/train_cpu.sh [DATA_DIR]    (default: ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
py=${PYTHON:-python}
train() { OMP_NUM_THREADS=1 "$py" -m pixelrnn.train --data-dir "$data" --no-progress --batch-size 32 --lr 2e-3 "$@"; }
(
  train --arch diagonal_bilstm --dataset binarized_mnist --hidden 16 --layers 4 --minutes 14 \
        --out checkpoints/binarized-mnist-diagonal-bilstm
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
  train --arch pixelcnn --dataset cifar10 --conditional --cifar-parts a --hidden 32 --layers 6 --minutes 12 \
        --out checkpoints/cifar10-pixelcnn-conditional
) > runs/queue_b.log 2>&1 &
wait
