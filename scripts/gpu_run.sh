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
# Everything lands in $OUT (default gpu-run/): run.log, and the benchmarks' JSON.
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

step() {
  echo "== $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
}

gpu="--backend vulkan"
step "$convnet" adapters
step "$convnet" peak $gpu
step "$convnet" check $gpu --batch 2
step "$convnet" check $gpu --batch 2 --conv-kernel register-block --matmul-kernel register-block --linear-kernel block16
step "$convnet" check $gpu --model resnet50 --input-size 64 --batch 2
step "$convnet" check $gpu --model googlenet --aux-logits --input-size 64 --batch 2
step "$convnet" bench $gpu --batch 32 --profile --json "$out/alexnet.json"
step "$convnet" bench $gpu --batch 32 --conv-kernel register-block --matmul-kernel register-block --linear-kernel block16 \
  --json "$out/alexnet-cpu-shaped.json"
# Every convolution algorithm forced (checked, then timed), then the tune's measured choice per
# layer, its cache kept with the results.
step "$convnet" check $gpu --batch 2 --conv-algorithm direct
step "$convnet" check $gpu --batch 2 --conv-algorithm winograd2
step "$convnet" bench $gpu --batch 32 --conv-algorithm direct --json "$out/alexnet-direct.json"
step "$convnet" bench $gpu --batch 32 --conv-algorithm winograd2 --json "$out/alexnet-winograd.json"
step "$convnet" tune $gpu --batch 32 --tune-cache "$out/tune.json"
step "$convnet" bench $gpu --batch 32 --profile --tune-cache "$out/tune.json" --json "$out/alexnet-tuned.json"
step "$convnet" tune $gpu --model resnet50 --batch 32 --tune-cache "$out/tune.json"
step "$convnet" bench $gpu --model resnet50 --batch 32 --tune-cache "$out/tune.json" --json "$out/resnet50-tuned.json"
step "$convnet" bench $gpu --model alexnet-2gpu --batch 32 --profile --json "$out/alexnet-2gpu.json"
step "$convnet" bench $gpu --model vgg16 --batch 32 --json "$out/vgg16.json"
step "$convnet" bench $gpu --model resnet50 --batch 32 --profile --json "$out/resnet50.json"
step "$convnet" bench $gpu --model resnet50 --batch 32 --update --pass forward-backward \
  --json "$out/resnet50-training-step.json"
step "$convnet" bench $gpu --model googlenet --batch 32 --json "$out/googlenet.json"

# Style transfer, VGG-19 at 512 with torchvision's initialisation (no weights download there):
# seconds per step and the step's profile.
step "$convnet" style $gpu --content docs/images/cat.jpg --style docs/images/hubble.jpg --size 512 \
  --steps 20 --profile --out "$out/style.png"
step "$convnet" style $gpu --content docs/images/cat.jpg --style docs/images/hubble.jpg --size 512 \
  --steps 20 --optimizer lbfgs --out "$out/style-lbfgs.png"

# The PyTorch peer from the same files.
work=$(mktemp -d)
step "$convnet" init --out "$work/w.safetensors"
python3 -c "import numpy as np; np.random.seed(0); \
np.save('$work/x.npy', (np.random.randn(32, 3, 224, 224) * 0.1).astype('<f4'))"
step "$convnet" run $gpu --weights "$work/w.safetensors" --input "$work/x.npy" \
  --output "$work/y.npy" --grads "$work/g.safetensors"
step python3 scripts/torch_compare.py --model alexnet --weights "$work/w.safetensors" \
  --input "$work/x.npy" --logits "$work/y.npy" --grads "$work/g.safetensors" --pass both \
  --batches 100 --burn-in 10 --device cuda
