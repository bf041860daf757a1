#!/usr/bin/env bash
# One stage of the GPU training session planned for paper-grade checkpoints (one H100, three calls of
# under 10 minutes each; files outside $OUT survive between calls only while the machine stays warm).
#   bash configs/gpu/session.sh STAGE DATA_FOLDER
# STAGE 1: benchmark, then start the five MNIST runs. STAGE 2: resume them and start CIFAR-10 (quarters a, b).
# STAGE 3: resume everything to the end of each config's --hours (CIFAR now also on quarter c); final test
# evaluation and samples. DATA_FOLDER: the .npz files carried with this call, added to what earlier calls left.
# Every run trains from its config; all run at once on the GPU under CUDA MPS (each is launch-bound).
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=$1
work=/tmp/pixelrnn
mkdir -p "$work/data" "$work/runs" "${OUT:=$work/out}"
cp "$2"/*.npz "$work/data/"
export PYTHONUNBUFFERED=1
py=python3
mnist=(binarized-mnist-diagonal-bilstm binarized-mnist-row-lstm binarized-mnist-pixelcnn
       binarized-mnist-multiscale-row-lstm mnist-row-lstm-conditional)
cifar=cifar10-pixelcnn-conditional
minutes=(0 5.3 8.0 0)  # this call's budget per stage (0: to the end of the schedule)

if [ "$stage" = 1 ]; then
  nvidia-smi -L
  $py -m pixelrnn.bench train --device cuda --shapes mnist --batch 64 256 1024 --iters 5 --baseline .bench_old \
    | tee "$OUT/bench_train_mnist.txt"
  $py -m pixelrnn.bench train --device cuda --shapes cifar --batch 16 64 --iters 5 --baseline .bench_old \
    | tee "$OUT/bench_train_cifar.txt"
fi
if [ ! -e /tmp/mps_checked ]; then  # CUDA MPS lets the small runs' kernels share the GPU at once
  touch /tmp/mps_checked
  if nvidia-cuda-mps-control -d && timeout 60 $py -c "import torch; assert (torch.ones(1, device='cuda') + 1).item() == 2"; then
    echo "CUDA MPS on"
  else
    echo quit | nvidia-cuda-mps-control; echo "CUDA MPS unavailable: the runs time-share the GPU"
  fi
fi
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 30 >> "$work/runs/gpu_utilization.log" &
monitor=$!

train() {  # name, extra flags...
  local name=$1; shift
  local flags=(--config "configs/gpu/$name.json" --data-dir "$work/data" --out "$work/runs/$name" --resume --no-progress
               --minutes "${minutes[$stage]}" "$@")
  { $py -m pixelrnn.train "${flags[@]}" || $py -m pixelrnn.train "${flags[@]}" --no-cuda-graph; } \
    >> "$work/runs/$name.log" 2>&1
}
pids=()
for name in "${mnist[@]}"; do train "$name" & pids+=($!); done
if [ "$stage" = 2 ]; then train $cifar --cifar-parts ab & pids+=($!); fi
if [ "$stage" = 3 ]; then train $cifar --cifar-parts abc & pids+=($!); fi
wait "${pids[@]}"
kill $monitor
tail -n 3 "$work"/runs/*.log
# back to the workstation: every MNIST run whole; CIFAR without its 55 MB optimizer state (it stays here)
tar czf "$OUT/mnist_runs.tgz" -C "$work/runs" "${mnist[@]}" $(cd "$work/runs" && ls *.log)
if [ -d "$work/runs/$cifar" ]; then
  tar czf "$OUT/cifar_run.tgz" -C "$work/runs" --exclude training_state.safetensors --exclude best.safetensors $cifar
fi
ls -la "$OUT"
