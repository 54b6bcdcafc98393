#!/usr/bin/env bash
# Runs the SAME training command on every worker of a (multi-host) Cloud TPU VM.
#
#   launch/tpu/train_tpu_vm.sh TPU_NAME ZONE setup
#   launch/tpu/train_tpu_vm.sh TPU_NAME ZONE train gs://BUCKET/runs/paper [--config.x=y ...]
#   launch/tpu/train_tpu_vm.sh TPU_NAME ZONE logs      # tail of worker 0's log
#   launch/tpu/train_tpu_vm.sh TPU_NAME ZONE stop      # SIGTERM: all hosts save and stop
#
# setup  copies this checkout (git archive of HEAD) to ~/gengait-jax on every worker and
#        installs the pinned requirements plus jax[tpu] and GCS support into its .venv.
# train  starts `python -m launch.train --distributed` in the background on every worker
#        (jax.distributed.initialize() finds the other workers by itself on a TPU VM).
#        The workdir must be on GCS so that every host sees it: orbax writes one checkpoint
#        from all hosts, and metrics.jsonl / TensorBoard come from host 0. The TFDS data_dir
#        is local on every worker (process 0 builds the dataset, then the others build the
#        same one; array_record cannot write to a bucket). Rerunning `train` resumes.
# stop   sends SIGTERM to the training process of every worker: JAX's preemption service
#        makes all hosts agree on one step, where they save a checkpoint and exit. (Ctrl-C
#        is for single-host runs: on several hosts the hosts would not agree on the step.)
#
# Environment: PRESET (default paper), DATA_DIR (a local path, default ~/gengait-jax/data_dir),
#              PROJECT (gcloud --project, optional).
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,22p' "$0"; exit 2; }
tpu="$1"; zone="$2"; action="$3"; shift 3
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
proj=(); [ -n "${PROJECT:-}" ] && proj=(--project "$PROJECT")
on_all() { gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${proj[@]}" --worker=all --command "$1"; }
pidfile='~/gengait-jax/train.pid'

case "$action" in
  setup)
    tarball="$(mktemp --suffix=.tar.gz)"
    git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
    gcloud compute tpus tpu-vm scp "$tarball" "$tpu":~/gengait-jax.tar.gz --zone "$zone" \
      "${proj[@]}" --worker=all
    rm -f "$tarball"
    on_all 'set -e; mkdir -p ~/gengait-jax && tar -xzf ~/gengait-jax.tar.gz -C ~/gengait-jax
      cd ~/gengait-jax && bash launch/setup.sh
      .venv/bin/pip install -q "jax[tpu]==$(.venv/bin/python -c "import jax; print(jax.__version__)")" gcsfs google-cloud-storage'
    ;;
  train)
    [ $# -ge 1 ] || { echo "train needs a gs:// workdir" >&2; exit 2; }
    workdir="$1"; shift
    case "$workdir" in gs://*) ;; *) echo "workdir must be gs:// on a multi-host VM" >&2; exit 2;; esac
    data_dir="${DATA_DIR:-data_dir}"  # relative to ~/gengait-jax on every worker
    extra=""; [ $# -gt 0 ] && extra="$(printf ' %q' "$@")"
    on_all "cd ~/gengait-jax && nohup .venv/bin/python -m launch.train --distributed \
      --config=gengait_jax/configs/default.py:${PRESET:-paper} --workdir=$workdir \
      --config.data.data_dir=$data_dir $extra > train.log 2>&1 & echo \$! > $pidfile"
    echo "started on all workers; follow with: $0 $tpu $zone logs"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${proj[@]}" --worker=0 \
      --command 'tail -n 50 ~/gengait-jax/train.log'
    ;;
  stop)
    on_all "kill -TERM \$(cat $pidfile) && echo sent SIGTERM"
    ;;
  *) echo "unknown action $action (setup|train|logs|stop)" >&2; exit 2 ;;
esac
