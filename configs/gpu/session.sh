#!/usr/bin/env bash
# The GPU session for paper-size checkpoints. A lent GPU gives 15 minutes of device time in all (start-up
# included) and at most 10 minutes a call, so each stage is one call of about 6.5 minutes (4.5 of training, the
# configs' --hours, then the full test split, samples and card):
#   bash configs/gpu/session.sh mnist DATA_FOLDER   # six binarized-MNIST / MNIST runs side by side (the last two:
#                          # class-conditional MNIST with class maps, with and without the hybrid objective, an A/B)
#   bash configs/gpu/session.sh cifar DATA_FOLDER   # CIFAR-10 Row LSTM (the paper's CIFAR model, here
#                          # class-conditional) and an unconditional Multi-Scale Row LSTM (Upscale in colour), on one
#                          # training quarter
# DATA_FOLDER holds the .npz files carried with the call (cifar: one quarter, CIFAR_PARTS, default a, and the test
# file). Each run trains from configs/gpu/NAME.json to the end of its --hours, evaluates the test split and writes
# its checkpoint folder (config, weights, metrics, samples, card) to $OUT/NAME; logs go to $OUT/logs.
# REHEARSE=1 runs the same script at tiny sizes on the CPU: tests/test_gpu_session.py does, so that it works the
# first time a GPU is lent.
set -uo pipefail
stage=${1:?stage: mnist or cifar} data=$(realpath "${2:?data folder}")
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/pixelrnn-out}
py=${PYTHON:-python3}
mkdir -p "$out/logs"
export PYTHONUNBUFFERED=1  # a call cut off at its limit still leaves its logs
case $stage in
  mnist) runs=(binarized-mnist-diagonal-bilstm binarized-mnist-row-lstm binarized-mnist-pixelcnn
               binarized-mnist-multiscale-row-lstm mnist-row-lstm-conditional-hybrid mnist-row-lstm-conditional-maps)
         extra=() ;;
  cifar) runs=(cifar10-row-lstm cifar10-multiscale-row-lstm)
         extra=(--cifar-parts "${CIFAR_PARTS:-a}") ;;
  *) echo "stage must be mnist or cifar, not $stage" >&2; exit 2 ;;
esac
if [ "${REHEARSE:-0}" = 1 ]; then
  extra+=(--device cpu --hidden 4 --layers 1 --out-hidden 8 --batch-size 8 --max-steps 3 --hours 0 --eval-every 2
          --eval-images 8 --test-limit 8 --samples 1 --train-limit 64)
else
  nvidia-smi -L
  # CUDA MPS lets the runs' small kernels share the GPU at once (each run alone is launch-bound); if CUDA does not
  # work under it (a container without the MPS server), it is stopped and the runs time-share the GPU
  if nvidia-cuda-mps-control -d 2>/dev/null &&
     timeout 60 $py -c "import torch; assert (torch.ones(1, device='cuda') + 1).item() == 2"; then
    echo "CUDA MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "CUDA MPS unavailable: the runs time-share the GPU"
  fi
fi

train() {  # one run (again without a CUDA graph if the graph fails); its optimizer state stays behind
  local name=$1
  local flags=(--config "configs/gpu/$name.json" --data-dir "$data" --out "$out/$name" --no-progress "${extra[@]}")
  if { $py -m pixelrnn.train "${flags[@]}" || { [ "${REHEARSE:-0}" != 1 ] && rm -rf "${out:?}/$name" &&
       $py -m pixelrnn.train "${flags[@]}" --no-cuda-graph; }; } > "$out/logs/$name.log" 2>&1; then
    rm -f "$out/$name"/training_state.* "$out/$name/best.safetensors"
  else
    echo "$name failed:"; tail -n 20 "$out/logs/$name.log"; return 1
  fi
}
pids=()
for name in "${runs[@]}"; do train "$name" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for name in "${runs[@]}"; do echo "$name: $(tail -n 1 "$out/logs/$name.log")"; done
[ "${REHEARSE:-0}" = 1 ] || echo quit | nvidia-cuda-mps-control 2>/dev/null
exit $status
