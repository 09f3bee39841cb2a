#!/bin/sh
# Issue #10's acceptance check: 10 steps of train-ae, then --resume to 20, equal bit for bit to 20 in one go.
#   sh scripts/ae_resume_check.sh [WORK_DIR]   (default /tmp/ae_resume_check; uses .venv/bin/ldmkit)
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.venv/bin/ldmkit
C=$ROOT/configs/ae_kl_f4_fmnist.yaml
W=${1:-/tmp/ae_resume_check}
rm -rf "$W" && mkdir -p "$W" && cd "$W"
$B train-ae "$C" --out a --train.max_steps=20 --train.checkpoint_every=10 --no-progress
$B train-ae "$C" --out b --train.max_steps=10 --no-progress
$B train-ae "$C" --out b --resume --train.max_steps=20 --no-progress
"$ROOT/.venv/bin/python" - <<'PY'
import torch
from safetensors.torch import load_file
for f in ["model", "discriminator", "optimizer", "disc_optimizer"]:
    a = load_file(f"a/checkpoints/step_0000020/{f}.safetensors")
    b = load_file(f"b/checkpoints/step_0000020/{f}.safetensors")
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"{f}: {len(a)} tensors, bitwise equal: {same}")
    assert same, f
PY
