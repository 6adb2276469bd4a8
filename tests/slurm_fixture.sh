#!/usr/bin/env bash
# A single-node SLURM on this machine for tests/test_slurm.py (run as root; no systemd needed).
#
#   tests/slurm_fixture.sh start DIR   install slurm-wlm + munge if missing, write DIR/slurm.conf, start
#                                      munged, slurmctld and slurmd, wait until the node is idle
#   tests/slurm_fixture.sh stop DIR    stop the three daemons started for DIR
#
# Clients need SLURM_CONF=DIR/slurm.conf. Exit 77 when the packages cannot be installed (the test skips
# on that code only); any other failure exits 1 with the daemon logs' tails.
# Environment: SLURM_FIXTURE_CTLD_PORT (6817), SLURM_FIXTURE_SLURMD_PORT (6818).
set -euo pipefail

cmd=${1:-}; dir=${2:-}
if [[ -z $cmd || -z $dir ]] || [[ $cmd != start && $cmd != stop ]]; then
    echo "usage: $0 start|stop DIR   (DIR: an absolute folder for the config, state and logs)" >&2
    exit 2
fi
[[ $dir == /* ]] || { echo "error: DIR must be an absolute path, got '$dir'" >&2; exit 2; }

stop_pid() {  # stop_pid FILE: TERM the process whose id FILE holds, KILL it after 10 s
    local f=$1 pid
    [[ -s $f ]] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

if [[ $cmd == stop ]]; then
    stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"
    echo "stopped the SLURM daemons of $dir"
    exit 0
fi

[[ $(id -u) == 0 ]] || { echo "error: run as root (the daemons run as SlurmUser=root)" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    echo "installing slurm-wlm and munge from the Debian archive"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get install -y --no-install-recommends slurm-wlm munge \
            || { apt-get update && apt-get install -y --no-install-recommends slurm-wlm munge; }; }; then
        echo "cannot install slurm-wlm and munge (apt-get failed)" >&2
        exit 77
    fi
fi

mkdir -p "$dir"/{spool,state,log}
chmod 700 "$dir"
ctld_port=${SLURM_FIXTURE_CTLD_PORT:-6817}
slurmd_port=${SLURM_FIXTURE_SLURMD_PORT:-6818}
cpus=$(nproc)
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

# munge: a private key and socket, so nothing outside DIR is touched
if [[ ! -s $dir/munge.key ]]; then
    dd if=/dev/urandom of="$dir/munge.key" bs=1 count=128 status=none
fi
chmod 400 "$dir/munge.key"

cat > "$dir/slurm.conf" <<CONF
ClusterName=vaanet-test
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf

fail() {
    echo "error: $1" >&2
    for f in "$dir"/log/*.log; do [[ -f $f ]] && { echo "---- tail of $f" >&2; tail -n 30 "$f" >&2; }; done
    "$0" stop "$dir" >&2 || true
    exit 1
}

stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" || fail "munged did not start"
munge -n --socket="$dir/munge.socket" | unmunge --socket="$dir/munge.socket" >/dev/null \
    || fail "munge cannot encode and decode a credential"
slurmctld -f "$dir/slurm.conf" -c || fail "slurmctld did not start"   # -c: a clean start, no old jobs
slurmd -f "$dir/slurm.conf" -N localhost || fail "slurmd did not start"

for _ in $(seq 120); do
    state=$(sinfo -h -N -n localhost -o '%t' 2>/dev/null || true)
    if [[ $state == idle ]]; then
        echo "SLURM is up: node localhost idle, $cpus CPUs, ${mem_mb} MB (SLURM_CONF=$dir/slurm.conf)"
        exit 0
    fi
    sleep 1
done
fail "the node did not become idle within 120 s (sinfo state: '${state:-none}')"
