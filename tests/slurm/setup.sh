#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for `make test-slurm` (as root; idempotent; no systemd).
#   bash tests/slurm/setup.sh start   install Debian's slurm-wlm and munge if missing, start munged, slurmctld and
#                                     slurmd, check `sinfo` and `srun hostname`; prints the SLURM_CONF line to use
#   bash tests/slurm/setup.sh stop    stop the three daemons by the pids they wrote
# State, logs and slurm.conf live in $GRADCLIP_SLURM_DIR (default /tmp/gradclip-slurm): /etc/slurm is not touched.
# No accounting daemon (slurmdbd): sacct fails, and the suite's SLURM launcher asks squeue instead (docs/sweeps.md).
set -euo pipefail
DIR=${GRADCLIP_SLURM_DIR:-/tmp/gradclip-slurm}
CONF=$DIR/slurm.conf
MUNGE_PID=/run/munge/munged.pid

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$MUNGE_PID"; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then echo "error: pid $pid ($pidfile) did not stop in 10 s" >&2; exit 1; fi
        fi
        rm -f "$pidfile"
    done
    echo "slurm: stopped"
}

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
    # Exit status 3: SLURM cannot be installed here (the tests are skipped, saying why); any other failure is one.
    if [[ $(id -u) != 0 ]]; then
        echo "SLURM is not installed and installing it needs root: apt-get install slurm-wlm munge" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are fetched only when they do not know the package yet (a fresh machine).
    apt-cache show slurm-wlm >/dev/null 2>&1 || apt-get update -qq || true
    echo "slurm: installing slurm-wlm and munge (Debian packages, ~30 s)"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { echo "apt-get could not install slurm-wlm and munge (no Debian mirror reachable?)" >&2; exit 3; }
}

configure() {
    mkdir -p "$DIR/state" "$DIR/spool"
    local memory
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # MB, leaving the system its share
    cat > "$CONF" <<EOF
# Written by tests/slurm/setup.sh: one node, this machine, no accounting; a cancelled job is killed 2 s after its
# SIGTERM (KillWait, 30 s by default), which submitit ignores; a requeued job waits cred_expire (120 s by default).
ClusterName=gradclip
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive "$MUNGE_PID" && return
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then runuser -u munge -- mungekey --create; fi
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.1; done
    echo "error: munged did not start (see /var/log/munge/munged.log)" >&2; exit 1
}

start() {
    install
    configure
    start_munge
    export SLURM_CONF=$CONF
    if alive "$DIR/slurmctld.pid"; then scontrol reconfigure; else slurmctld -f "$CONF"; fi
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
    for _ in $(seq 100); do
        sinfo -h -o %T 2>/dev/null | grep -qx idle && break
        sleep 0.2
    done
    if ! sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "error: the node is not idle after 20 s: $(sinfo 2>&1 | tail -1) (logs in $DIR)" >&2; exit 1
    fi
    [[ $(timeout 60 srun -t 1 hostname) == "$(hostname)" ]] || { echo "error: srun hostname failed (logs in $DIR)" >&2; exit 1; }
    echo "slurm: up ($(sinfo -h -o '%n, %c CPUs, partition %P'))"
    echo "SLURM_CONF=$CONF"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
