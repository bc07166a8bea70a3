#!/usr/bin/env bash
# Run COMMAND as NPROC processes of one multi-controller JAX run on this machine (for testing; docs/scaling.md).
#
#   scripts/launch_local.sh NPROC COMMAND...
#   scripts/launch_local.sh 2 coasejax simulate quickstart --set population.n_agents=65536 --out runs/mp
#
# Each process gets COASEJAX_COORDINATOR=127.0.0.1:PORT, COASEJAX_NUM_PROCESSES=NPROC and COASEJAX_PROCESS_ID=0…NPROC−1
# (coasejax.distributed joins them with jax.distributed.initialize), and XLA_FLAGS gains
# --xla_force_host_platform_device_count=DEVICES: DEVICES host CPU devices per process.
#
# Environment:
#   DEVICES         host CPU devices per process (default 2)
#   PORT            the coordinator's port (default: a free one)
#   JAX_PLATFORMS   default cpu (forced host devices are CPU devices; set it empty to let JAX pick)
#   LOG_DIR         if set, process I's stdout and stderr go to LOG_DIR/process_I.{out,err}; otherwise process 0's
#                   go to the terminal and the others' stderr too (their stdout, which gloo's connection messages
#                   fill, is dropped)
#
# Exit status: the first non-zero status of a process, else 0. When one process fails the others are stopped: they
# would otherwise wait for it at the next collective until the runtime's heartbeat timeout.
set -uo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/launch_local.sh NPROC COMMAND... (NPROC a whole number ≥ 1)" >&2
    exit 2
fi
nproc=$1
shift
devices=${DEVICES:-2}
if [[ ! "$devices" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: DEVICES=$devices: expected a whole number ≥ 1" >&2
    exit 2
fi
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export JAX_PLATFORMS=${JAX_PLATFORMS-cpu}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices"
export COASEJAX_COORDINATOR=127.0.0.1:$port COASEJAX_NUM_PROCESSES=$nproc
unset COASEJAX_DISTRIBUTED
[[ -n "${LOG_DIR:-}" ]] && mkdir -p "$LOG_DIR"

pids=()
for ((i = 0; i < nproc; i++)); do
    if [[ -n "${LOG_DIR:-}" ]]; then
        COASEJAX_PROCESS_ID=$i "$@" >"$LOG_DIR/process_$i.out" 2>"$LOG_DIR/process_$i.err" &
    elif ((i == 0)); then
        COASEJAX_PROCESS_ID=$i "$@" &
    else
        COASEJAX_PROCESS_ID=$i "$@" >/dev/null &
    fi
    pids+=($!)
done

stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT TERM

status=0
remaining=$nproc
while ((remaining > 0)); do
    wait -n
    rc=$?
    remaining=$((remaining - 1))
    if ((rc != 0 && status == 0)); then
        status=$rc
        stop_all
    fi
done
exit $status
