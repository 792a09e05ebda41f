#!/usr/bin/env bash
# The speed issue's run on a real GPU, in one go: adapters, the measured peak, the seed's benchmark
# with per-layer profiles for both AlexNets (and the CPU-shaped kernels forced, for comparison),
# VGG-16, GoogLeNet and ResNet-50 forward, forward-backward and training step, `convnet check`
# on the GPU with each kernel variant (training mode for the batch-norm networks), and the PyTorch
# peer on CUDA (fp32, TF32 off, cuDNN benchmark mode) from the same weights and images.
#
# Build here, then hand the binary (stripped, to travel light) and the Vulkan loader to the GPU
# machine (the device tool's README shows how to fetch `.gl`):
#
#   cargo build --release && mkdir -p .device-bin && cp target/release/convnet .device-bin/ \
#       && strip .device-bin/convnet
#   device run, carry [".device-bin", ".gl"]:
#       for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; scripts/gpu_run.sh
#
# Everything lands in $OUT (default gpu-run/): run.log, and results.tgz (the benchmarks'
# JSON, the tune's cache and the style-transfer image). Steps run in
# order of importance, each under STEP_LIMIT seconds (default 150); none starts after DEADLINE
# seconds (default 480), so a lease of a few minutes still returns the figures that matter most.
set -uo pipefail
cd "$(dirname "$0")/.."
convnet=${CONVNET:-.device-bin/convnet}
out=${OUT:-gpu-run}
mkdir -p "$out"
log="$out/run.log"
# The NVIDIA Vulkan driver where the loader does not find it by itself.
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

step_limit=${STEP_LIMIT:-150}
deadline=$((SECONDS + ${DEADLINE:-480}))
step() {
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "== skipped (deadline): $*" | tee -a "$log"
    return
  fi
  echo "== $*" | tee -a "$log"
  local began=$SECONDS
  timeout "$step_limit" "$@" 2>&1 | tee -a "$log"
  echo "   (exit ${PIPESTATUS[0]}; $((SECONDS - began)) s)" | tee -a "$log"
  tar czf "$out/results.tgz" -C "$work" results
}

gpu="--backend vulkan"
cpu_shaped="--conv-kernel register-block --matmul-kernel register-block --linear-kernel block16"
work=$(mktemp -d)
# At most 8 files come back from a device run: the JSON results travel as one archive, remade after
# every step so that a run cut short still returns what it measured.
json="$work/results"
mkdir -p "$json"
python3 -c "import numpy as np; np.random.seed(0); \
np.save('$work/x.npy', (np.random.randn(32, 3, 224, 224) * 0.1).astype('<f4')); \
np.save('$work/labels.npy', np.arange(32) % 1000)"

step nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
step "$convnet" adapters
step "$convnet" peak $gpu
# The seed's benchmark, and the PyTorch/cuDNN peer (fp32, TF32 off) from the same weights and input.
step "$convnet" bench $gpu --batch 32 --profile --json "$json/alexnet.json"
step "$convnet" init --out "$work/w.safetensors"
step "$convnet" run $gpu --weights "$work/w.safetensors" --input "$work/x.npy" \
  --output "$work/y.npy" --grads "$work/g.safetensors"
step python3 scripts/torch_compare.py --model alexnet --weights "$work/w.safetensors" \
  --input "$work/x.npy" --logits "$work/y.npy" --grads "$work/g.safetensors" --pass both \
  --batches 50 --burn-in 10 --device cuda --f64
# ResNet-50 training, the figure GPUs are compared by, against the same peer.
step "$convnet" bench $gpu --model resnet50 --batch 32 --update --pass forward-backward \
  --profile --json "$json/resnet50-training-step.json"
step "$convnet" init --model resnet50 --out "$work/r.safetensors"
step "$convnet" run $gpu --model resnet50 --weights "$work/r.safetensors" --input "$work/x.npy" \
  --labels "$work/labels.npy" --output "$work/ry.npy" --grads "$work/rg.safetensors"
step python3 scripts/torch_compare.py --model resnet50 --weights "$work/r.safetensors" \
  --input "$work/x.npy" --labels "$work/labels.npy" --logits "$work/ry.npy" \
  --grads "$work/rg.safetensors" --pass both --batches 20 --burn-in 5 --device cuda --f64
# Correctness on the GPU against the CPU reference.
step "$convnet" check $gpu --batch 2
step "$convnet" check $gpu --model resnet50 --input-size 64 --batch 2
# Every convolution algorithm forced, then the tune's measured choice per layer (its cache kept).
step "$convnet" bench $gpu --batch 32 --conv-algorithm direct --json "$json/alexnet-direct.json"
step "$convnet" bench $gpu --batch 32 --conv-algorithm winograd2 --json "$json/alexnet-winograd.json"
step "$convnet" bench $gpu --batch 32 --conv-algorithm winograd4 --json "$json/alexnet-winograd4.json"
step "$convnet" bench $gpu --model vgg16 --batch 32 --conv-algorithm winograd4 --json "$json/vgg16-winograd4.json"
step "$convnet" check $gpu --batch 32 --conv-algorithm winograd4
# f16 storage (--precision f16), never yet run on a GPU: forward at the batch where the fully
# connected layers are bound by their weights, and at 32; its accuracy.
step "$convnet" bench $gpu --batch 2 --pass forward --profile --json "$json/alexnet-b2.json"
step "$convnet" bench $gpu --batch 2 --precision f16 --profile --json "$json/alexnet-b2-f16.json"
step "$convnet" bench $gpu --batch 32 --precision f16 --profile --json "$json/alexnet-f16.json"
step "$convnet" check $gpu --batch 2 --precision f16
step "$convnet" bench $gpu --model resnet50 --batch 32 --precision f16 --json "$json/resnet50-f16.json"
step "$convnet" tune $gpu --batch 32 --tune-cache "$json/tune.json"
step "$convnet" bench $gpu --batch 32 --tune-cache "$json/tune.json" --json "$json/alexnet-tuned.json"
step "$convnet" bench $gpu --model vgg16 --batch 32 --json "$json/vgg16.json"
step "$convnet" bench $gpu --model googlenet --batch 32 --json "$json/googlenet.json"
step "$convnet" bench $gpu --batch 32 $cpu_shaped --json "$json/alexnet-cpu-shaped.json"
step "$convnet" check $gpu --batch 2 --conv-algorithm direct
step "$convnet" check $gpu --batch 2 $cpu_shaped
step "$convnet" check $gpu --model googlenet --aux-logits --input-size 64 --batch 2
step "$convnet" tune $gpu --model resnet50 --batch 32 --tune-cache "$json/tune.json"
step "$convnet" bench $gpu --model resnet50 --batch 32 --tune-cache "$json/tune.json" \
  --json "$json/resnet50-tuned.json"
step "$convnet" bench $gpu --model alexnet-2gpu --batch 32 --json "$json/alexnet-2gpu.json"
# Style transfer, VGG-19 at 512 with torchvision's initialisation: seconds per step.
step "$convnet" style $gpu --content docs/images/cat.jpg --style docs/images/hubble.jpg --size 512 \
  --steps 20 --out "$json/style.png"
