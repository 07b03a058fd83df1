#!/usr/bin/env bash
# Pre-train on a Cloud TPU VM (one host or a multi-host pod slice) from your machine.
#
#   launch/tpu_vm.sh create              # create the TPU VM
#   launch/tpu_vm.sh copy                # copy this checkout (committed files) to every worker
#   launch/tpu_vm.sh install             # install electra_jax with its tpu extra (libtpu) on every worker
#   launch/tpu_vm.sh run --config=configs/base.py --workdir=/tmp/electra-base [overrides...]
#   launch/tpu_vm.sh logs                # follow worker 0's log (Ctrl-C stops following only)
#   launch/tpu_vm.sh stop                # stop the run and free the TPU (stale processes, lock file)
#   launch/tpu_vm.sh delete              # delete the TPU VM (billing stops)
#
# Settings come from the environment; the defaults make a v4-8 (one host):
#   TPU_NAME=electra ZONE=us-central2-b ACCELERATOR_TYPE=v4-8 RUNTIME_VERSION=tpu-ubuntu2204-base
#   PROJECT=<gcloud's default project>   EXTRA_CREATE_FLAGS="--spot" for a cheaper, preemptible VM
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
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
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
    on_all_workers "cd ~/$REMOTE_DIR && python3 -m pip install -q -U pip &&
      python3 -m pip install -q -e '.[tpu]' &&
      python3 -c 'import jax; print(jax.process_index(), jax.local_device_count(), \"TPU cores\")'"
    ;;
  run)
    [[ $# -gt 0 ]] || usage
    printf -v arguments '%q ' "$@"
    # nohup: the run outlives the ssh session; `logs` follows it.
    on_all_workers "cd ~/$REMOTE_DIR && nohup python3 -m electra_jax.train $arguments \
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
    on_all_workers "pkill -f 'python3 -m [e]lectra_jax' || true; sleep 2;
      sudo rm -f /tmp/libtpu_lockfile; sudo lsof -w /dev/accel* /dev/vfio/* 2>/dev/null || true"
    ;;
  delete)
    tpu delete "$TPU_NAME" --quiet
    ;;
  *)
    usage
    ;;
esac
