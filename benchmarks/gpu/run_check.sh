#!/usr/bin/env bash
# The device check (`python -m matryoshka.benchmarks.gpu_check`) on a bare GPU machine that has Python 3.12, CUDA
# 13's runtime and torch but no faiss and no network.
#
# Here, once, from the repository root (needs pip and the network):
#     benchmarks/gpu/run_check.sh prepare
# downloads faiss-cuda's wheel and splits it into 50 MB parts under .whl/faiss/ (added to .git/info/exclude).
# The wheel (99 MB) is more than one device call carries (64 MiB with the checkout), so it goes in two calls
# on one warm machine, the second within the 30 s it stays warm:
#     1. carry [".whl/faiss/part.aa"]:   benchmarks/gpu/run_check.sh stage
#        keeps the part in /tmp/faiss-parts, outside the checkout;
#     2. carry [".whl/faiss/part.ab", ".whl/faiss/NAME", ".whl/faiss/SHA256"]:
#        benchmarks/gpu/run_check.sh run [gpu_check options, e.g. --n 10000000 --gpu-memory-budget 40G]
#        joins the parts, checks the wheel's SHA-256, installs it and this project (without dependencies: the
#        machine has the rest) under /tmp/site, and runs the check from outside the checkout. The report, its
#        log and the card go to $OUT (else ./gpu-check/). At 10M x 384 the check is sized for 8 minutes on an H100.
set -euo pipefail

FAISS=faiss-cuda==1.14.1.post4
WHL=${WHL:-.whl}
PARTS=$WHL/faiss
STAGED=${STAGED:-/tmp/faiss-parts}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
TOP="indexing retrieval rerank benchmarks integrations"  # folders installed as matryoshka.<name> (pyproject.toml)

prepare() {
    mkdir -p "$PARTS"
    if [ "$WHL" = .whl ] && ! grep -qxF '/.whl/' .git/info/exclude 2>/dev/null; then
        echo '/.whl/' >> .git/info/exclude
    fi
    local tmp wheel
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$tmp" "$FAISS"
    wheel=$(ls "$tmp"/*.whl)
    rm -f "$PARTS"/*
    basename "$wheel" > "$PARTS/NAME"
    sha256sum "$wheel" | cut -d' ' -f1 > "$PARTS/SHA256"
    split -b 50M "$wheel" "$PARTS/part."
    rm -r "$tmp"
    ls -l "$PARTS"
}

stage() {
    mkdir -p "$STAGED"
    cp "$PARTS"/part.* "$STAGED"/
    ls -l "$STAGED"
}

install() {
    local wheel
    wheel=/tmp/$(cat "$PARTS/NAME")
    if compgen -G "$PARTS/part.*" >/dev/null; then stage >/dev/null; fi
    cat "$STAGED"/part.* > "$wheel"
    if ! echo "$(cat "$PARTS/SHA256")  $wheel" | sha256sum -c --quiet -; then
        echo "run_check: the joined wheel is not faiss-cuda's: a part is missing from $STAGED (stage it in a call" \
             "just before this one, on the same warm machine)" >&2
        exit 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$wheel"
    # the project as a wheel, built with the machine's setuptools (no network for an isolated build); where that
    # fails (a setuptools older than the project needs), its folders are copied where the wheel puts them
    if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" .; then
        echo "run_check: pip could not install the project; copying its packages into $SITE instead" >&2
        rm -rf "$SITE/matryoshka"
        cp -r matryoshka "$SITE/matryoshka"
        for top in $TOP; do cp -r "$top" "$SITE/matryoshka/$top"; done
    fi
    export PYTHONPATH=$SITE
}

run() {
    local out
    out=$(realpath -m "${OUT:-gpu-check}")
    mkdir -p "$out"
    install
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/card.txt"
    cd /tmp  # the installed package, not the checkout's folders
    "$PY" -c "import faiss, torch; print('faiss', faiss.__version__, 'GPUs', faiss.get_num_gpus(), 'torch', \
torch.__version__, torch.cuda.get_device_name())"
    "$PY" -m matryoshka.benchmarks.gpu_check --out "$out/gpu_check.json" --index /tmp/gpu-check-index "$@" 2>&1 \
        | tee "$out/gpu_check.log"
}

case "${1:-}" in
    prepare) prepare ;;
    stage) stage ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | stage | run [gpu_check options]" >&2; exit 2 ;;
esac
