#!/bin/bash
# Every GPU check the open issues ask for, as one command for the device tool (one H200 or
# H100 with its own python3 and torch), sized to about 8 minutes of its 15-minute lease.
#
# Before (here, once): the packages imseg needs that the device image lacks, as wheels in
# .whl/ (git-ignored):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pydantic pydantic-core annotated-types typing-inspection typing-extensions \
#       segmentation-models-pytorch
#   (pydantic-core must be the version the pydantic wheel asks for: `unzip -p
#   .whl/pydantic-2*.whl '*/METADATA' | grep pydantic-core`)
# Then: device run, command "bash bench/gpu_checks.sh", carry [".whl"], timeout_s 600.
# What comes back under $OUT: device.txt, tests.log, train_speed.log/.json, stage.log,
# pseudo_speed.log/.json.
set -uo pipefail
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    2>&1 | tee "$out/device.txt"

# 1. The tests that run only on CUDA (they skip on CPU), and the fused stage's equivalence.
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/training/test_fused.py \
    tests/evaluation/test_metrics.py tests/data/test_augment.py tests/experiment/test_settings.py \
    2>&1 | tee "$out/tests.log"

# 2. Issue 15 item 5: a stage step of S = 5 tiny U-Nets fused vs one at a time, 256 px,
#    batch 32, alpha 0.5 and 1.0 (target: fused >= 4x), then compiled (item 4: default mode,
#    and reduce-overhead = CUDA graphs).
timeout 200 python3 bench/train_speed.py --device cuda --no-keras --models 5 --alphas 0.5 1.0 \
    --warmup 10 --steps 40 --rounds 2 --json "$out/train_speed.json" 2>&1 | tee "$out/train_speed.log"
for mode in default reduce-overhead; do
    timeout 100 python3 bench/train_speed.py --device cuda --no-keras --models 5 --alphas 0.5 \
        --warmup 10 --steps 40 --rounds 1 --compile $mode 2>&1 | tee -a "$out/train_speed.log"
done

# 3. A whole `imseg train` stage of 5 candidates, fused (auto on CUDA) and one at a time.
python3 -m imseg prepare sample --task binary --out /tmp/s256 --n 400 --size 256 \
    --labeled-fraction 0.5 > /dev/null || exit 1
for fuse in auto never; do
    start=$SECONDS
    timeout 100 python3 -m imseg train --data /tmp/s256 --out /tmp/stage_$fuse --benchmark ldt \
        --candidates 5 --epochs 5 --alpha 0.5 --batch-size 32 --device cuda --no-progress \
        --set train.fuse=$fuse 2>&1 | tail -4
    echo "fuse $fuse: $((SECONDS - start)) s wall (rc ${PIPESTATUS[0]})"
done 2>&1 | tee "$out/stage.log"

# 4. Pseudo-labeling on CUDA, eager and compiled (train.compile_inference: auto leaves CUDA
#    passes eager; this says whether compiling them would pay).
timeout 120 python3 bench/pseudo_speed.py --device cuda --no-keras --images 512 \
    --json "$out/pseudo_speed.json" 2>&1 | tee "$out/pseudo_speed.log"
