#!/usr/bin/env bash
# Pre-train on a Cloud TPU VM (one host or a multi-host pod slice) from your machine.
#
#   launch/tpu_vm.sh create              # create the TPU VM
#   launch/tpu_vm.sh copy                # copy this checkout (committed files) to every worker
#   launch/tpu_vm.sh install             # Python 3.12 and electra_jax with its tpu extra (libtpu) on every worker
#   launch/tpu_vm.sh run --config=base --workdir=/tmp/electra-base [overrides...]
#   launch/tpu_vm.sh logs                # follow worker 0's log (Ctrl-C stops following only)
#   launch/tpu_vm.sh stop                # stop the run and free the TPU (stale processes, lock file)
#   launch/tpu_vm.sh delete              # delete the TPU VM (billing stops)
#
# Settings come from the environment; the defaults make a v4-8 (one host):
#   TPU_NAME=electra ZONE=us-central2-b ACCELERATOR_TYPE=v4-8
#   RUNTIME_VERSION=<Google's runtime for the accelerator, below>
#   PROJECT=<gcloud's default project>   EXTRA_CREATE_FLAGS="--spot" for a cheaper, preemptible VM
#
# Runtimes (cloud.google.com/tpu/docs/runtimes, December 2026): v6e (e.g. v6e-8)
# v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e (v5litepod-8) v2-alpha-tpuv5-lite, v4 and
# older tpu-ubuntu2204-base. All four are Ubuntu 22.04, whose Python is 3.10, below
# electra_jax's 3.11: `install` therefore puts Python 3.12 and the package in a virtual
# environment of its own (~/electra_jax_venv, made by uv), and `run` uses it.
#
# `run` starts the same command on every worker (a pod slice such as v4-32 has 4);
# they find each other through jax.distributed, and the mesh spans all their chips
# (--config.mesh.*). Worker 0 (process 0) logs progress and writes the outputs to its
# workdir; on a workdir that is not shared, the other workers keep only their own
# copy of the tokenizer there (trained identically from the same corpus). Every
# worker reads the corpus itself: put it on each worker, or on a disk or bucket
# mounted on all of them (e.g. with gcsfuse).
set -euo pipefail

TPU_NAME="${TPU_NAME:-electra}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
case "$ACCELERATOR_TYPE" in
  v6e-*) default_runtime=v2-alpha-tpuv6e ;;
  v5p-*) default_runtime=v2-alpha-tpuv5 ;;
  v5litepod-*|v5e-*) default_runtime=v2-alpha-tpuv5-lite ;;
  *) default_runtime=tpu-ubuntu2204-base ;;
esac
RUNTIME_VERSION="${RUNTIME_VERSION:-$default_runtime}"
PYTHON_VERSION="3.12"
VENV="electra_jax_venv"  # under each worker's home directory
EXTRA_CREATE_FLAGS="${EXTRA_CREATE_FLAGS:-}"
REMOTE_DIR="electra_jax"  # under each worker's home directory
LOG_FILE="electra_jax.log"  # under each worker's home directory
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

tpu() {
  local project=()
  if [[ -n "${PROJECT:-}" ]]; then project=(--project="$PROJECT"); fi
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${project[@]}"
}

on_all_workers() {
  tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 2
}

command="${1:-}"
[[ -n "$command" ]] || usage
shift

case "$command" in
  create)
    # shellcheck disable=SC2086  # EXTRA_CREATE_FLAGS is a list of flags
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$RUNTIME_VERSION" $EXTRA_CREATE_FLAGS
    ;;
  copy)
    # The committed tree: what you run is what `git log` says you run.
    archive="$(mktemp -d)/electra_jax.tar.gz"
    git -C "$REPO" archive --format=tar.gz --output="$archive" HEAD
    tpu scp "$archive" "$TPU_NAME":electra_jax.tar.gz --worker=all
    on_all_workers "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR &&
      tar -xzf ~/electra_jax.tar.gz -C ~/$REMOTE_DIR && rm ~/electra_jax.tar.gz"
    ;;
  install)
    # uv brings its own Python builds, so the runtime's Python 3.10 is left alone.
    on_all_workers "set -e; command -v ~/.local/bin/uv >/dev/null ||
      curl -LsSf https://astral.sh/uv/install.sh | sh
      ~/.local/bin/uv venv --python $PYTHON_VERSION --allow-existing ~/$VENV
      cd ~/$REMOTE_DIR && ~/.local/bin/uv pip install --python ~/$VENV/bin/python -q -e '.[tpu]'
      ~/$VENV/bin/python -c 'import jax, sys; print(sys.version.split()[0], jax.process_index(), jax.local_device_count(), \"TPU chips\")'"
    ;;
  run)
    [[ $# -gt 0 ]] || usage
    printf -v arguments '%q ' "$@"
    # nohup: the run outlives the ssh session; `logs` follows it.
    on_all_workers "cd ~/$REMOTE_DIR && nohup ~/$VENV/bin/python -m electra_jax.train $arguments \
      > ~/$LOG_FILE 2>&1 < /dev/null &"
    echo "Started on every worker; follow it with: $0 logs"
    ;;
  logs)
    tpu ssh "$TPU_NAME" --worker=0 --command="tail -n 100 -F ~/$LOG_FILE"
    ;;
  stop)
    # A killed or crashed run can leave python holding the TPU, or libtpu's lock
    # file behind; the next run then fails with "TPU in use".
    # ([e]: the pattern must not match this very command line.)
    on_all_workers "pkill -f 'python -m [e]lectra_jax' || true; sleep 2;
      sudo rm -f /tmp/libtpu_lockfile; sudo lsof -w /dev/accel* /dev/vfio/* 2>/dev/null || true"
    ;;
  delete)
    tpu delete "$TPU_NAME" --quiet
    ;;
  *)
    usage
    ;;
esac
