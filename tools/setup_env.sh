#!/usr/bin/env bash
# Idempotent environment setup for vmamba-zoo (used by `make setup`, `make test`, `make demo`).
#
# One shared virtual environment lives outside the checkout, under
# $VMAMBA_ZOO_CACHE (default ~/.cache/vmamba-zoo), named after a hash of the
# requirements and of this script; the checkout's .venv is a link to it.  The
# mmcv 2.1.0 wheel (source-only on PyPI, ~12 min to compile on 2 cores) is
# built once and cached in $VMAMBA_ZOO_CACHE/wheels, so later setups and fresh
# clones reuse it.  A second setup in a fresh clone only re-links .venv and
# re-registers the checkout (editable install, a few seconds).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VMAMBA_ZOO_CACHE:-$HOME/.cache/vmamba-zoo}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0

mkdir -p "$CACHE/wheels"
# Bump ENV_REVISION when the install steps below change in a way that needs a new environment.
ENV_REVISION=1
KEY=$( (echo "$ENV_REVISION $TORCH_SPEC $MMCV_VERSION"; cat "$ROOT/requirements/env.txt") | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$KEY"

log() { echo "[setup] $*" >&2; }

build_mmcv_wheel() {
    # mmcv 2.x ships no wheels for this torch; build it with its C++ ops.
    local wheel
    wheel=$(ls "$CACHE"/wheels/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [ -n "$wheel" ]; then echo "$wheel"; return; fi
    log "building mmcv $MMCV_VERSION with ops (about 12 minutes on 2 cores; cached afterwards)"
    local work
    work=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work" >&2
    tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    # torch >= 2.10 headers need C++20; mmcv forces c++14/17.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
    (cd "$work/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation . -w "$work/dist" >&2)
    cp "$work"/dist/mmcv-*.whl "$CACHE/wheels/"
    rm -rf "$work"
    ls "$CACHE"/wheels/mmcv-"$MMCV_VERSION"-*.whl | head -n1
}

create_venv() {
    log "creating $VENV"
    # An interrupted earlier attempt left no .complete marker; the pip steps
    # below are idempotent, so resume in the same environment.
    "$VENV/bin/python" -c "" 2>/dev/null || { rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --upgrade pip "setuptools<81" wheel
    "$VENV/bin/pip" install -q $TORCH_SPEC
    "$VENV/bin/pip" install -q -r "$ROOT/requirements/env.txt" $TORCH_SPEC
    local mmcv_wheel
    mmcv_wheel=$(build_mmcv_wheel)
    "$VENV/bin/pip" install -q --no-deps "$mmcv_wheel"
    "$VENV/bin/pip" install -q addict yapf $TORCH_SPEC
    # mmengine pulls in opencv-python, whose cv2 needs libGL; keep the headless build.
    "$VENV/bin/pip" uninstall -q -y opencv-python >/dev/null 2>&1 || true
    "$VENV/bin/pip" install -q --force-reinstall --no-deps \
        "$("$VENV/bin/pip" list --format=freeze | grep -i '^opencv-python-headless==' || echo opencv-python-headless)"
    "$VENV/bin/python" -c "import torch, torchvision, timm, cv2, mmengine, mmcv.ops, mmdet, mmseg, skimage" \
        || { log "environment check failed"; exit 1; }
    touch "$VENV/.complete"
}

exec 9>"$CACHE/setup.lock"
flock 9
if [ ! -f "$VENV/.complete" ]; then
    create_venv
fi
ln -sfn "$VENV" "$ROOT/.venv"
# The Makefile puts .paths first on PYTHONPATH, so this checkout's packages win over the editable
# install (which points at whichever checkout registered last) in make targets and their subprocesses.
mkdir -p "$ROOT/.paths"
ln -sfn ../vmamba_zoo "$ROOT/.paths/vmamba_zoo"
ln -sfn ../kernels "$ROOT/.paths/vmamba_zoo_kernels"
# Register this checkout (editable, no dependencies); cheap, and re-points the
# shared environment at whichever checkout ran setup last.
if [ "$(cat "$VENV/.checkout" 2>/dev/null)" != "$ROOT" ] || [ "$ROOT/setup.cfg" -nt "$VENV/.checkout" ]; then
    log "registering $ROOT"
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT"
    echo "$ROOT" > "$VENV/.checkout"
fi
