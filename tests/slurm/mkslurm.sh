#!/usr/bin/env bash
# A Slurm cluster of one node for one test, made from Debian's packages
# (slurmctld, slurmd, slurm-client, munge) and nothing of the machine's own
# setup: its own munge key and munged (own socket), its own slurm.conf with
# its own ports, state, spool, pid and log files, all under DIR. Clients
# find it with SLURM_CONF=DIR/slurm.conf (written to DIR/slurm.env).
#
#   mkslurm.sh up DIR CTLD_PORT SLURMD_PORT [NAME:PID:ADDR ...]
#                        start munged, slurmctld -D and slurmd -D; wait until
#                        the node is idle. With NAME:PID:ADDR arguments (test
#                        hosts of tests/hosts/mkhosts.sh: host name, its
#                        sshd's pid, its address), one node per host, each
#                        slurmd in its host's network, UTS and mount
#                        namespaces (nsenter -t PID), slurmctld on the first
#                        host; clients must run there too (DIR/slurm.env
#                        says CTL_PID=PID).
#   mkslurm.sh down DIR  cancel every job, kill the daemons and what they
#                        started, remove DIR
#
# Needs root. No cgroups (proctrack/linuxproc, task/none), so it runs in a
# container too. The node is this host (its short name), as many CPUs as
# the machine has, one partition "test".
set -euo pipefail

die() { echo "mkslurm: $*" >&2; exit 1; }

up() {
    local dir=$1 cport=$2 dport=$3
    shift 3
    local hosts=("$@")
    [[ $(id -u) -eq 0 ]] || die "needs root"
    for b in munged slurmctld slurmd; do
        [[ -x /usr/sbin/$b ]] || die "/usr/sbin/$b not found (install munge slurmctld slurmd)"
    done
    command -v sinfo >/dev/null || die "sinfo not found (install slurm-client)"
    mkdir -p "$dir"/{munge,state,spool,log,run}
    chmod 755 "$dir" "$dir/spool" "$dir/log"
    chmod 700 "$dir/state" "$dir/run"
    # munged wants its directories owned by its user (root here), not
    # writable by others; the socket dir must be reachable by every user.
    chmod 755 "$dir/munge"
    mkdir -p "$dir/munge/sock"
    chmod 755 "$dir/munge/sock"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    local sock=$dir/munge/sock/munge.socket
    echo "$sock" >"$dir/munge.path"
    /usr/sbin/munged --force --socket="$sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || die "munged failed: $(tail -n 3 "$dir/log/munged.log" 2>/dev/null)"

    local host cpus ctl_addr=127.0.0.1 ctl_pid= names=() pids=() addrs=()
    host=$(hostname -s)
    cpus=$(nproc --all)
    local spec
    for spec in "${hosts[@]}"; do
        IFS=: read -r n p a <<<"$spec"
        names+=("$n") pids+=("$p") addrs+=("$a")
    done
    if ((${#names[@]})); then
        host=${names[0]} ctl_addr=${addrs[0]} ctl_pid=${pids[0]}
    else
        names=("$host") pids=("") addrs=(127.0.0.1)
    fi
    cat >"$dir/slurm.conf" <<CONF
# Written by tests/slurm/mkslurm.sh for one test.
ClusterName=dmtcptest
SlurmctldHost=$host($ctl_addr)
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
PlugStackConfig=$dir/plugstack.conf
CONF
    local i
    for i in "${!names[@]}"; do
        echo "NodeName=${names[$i]} NodeHostname=${names[$i]} NodeAddr=${addrs[$i]} CPUs=$cpus State=UNKNOWN" >>"$dir/slurm.conf"
    done
    local all
    all=$(IFS=,; echo "${names[*]}")
    echo "PartitionName=test Nodes=$all Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4" >>"$dir/slurm.conf"
    : >"$dir/plugstack.conf"
    chmod 644 "$dir/slurm.conf" "$dir/plugstack.conf"
    echo "SLURM_CONF=$dir/slurm.conf" >"$dir/slurm.env"
    echo "CTL_PID=$ctl_pid" >>"$dir/slurm.env"
    echo "$ctl_pid" >"$dir/run/ctl.ns"

    SLURM_CONF=$dir/slurm.conf setsid $(on "$ctl_pid") /usr/sbin/slurmctld -D -i \
        </dev/null >"$dir/log/slurmctld.out" 2>&1 &
    echo $! >"$dir/run/slurmctld.launch"
    for i in "${!names[@]}"; do
        # `ip netns exec` gave the test host a sysfs of its own, without
        # /sys/fs/cgroup, which slurmd insists on finding (it only reads
        # it here: proctrack/linuxproc, task/none). Mounted in the host's
        # private mount namespace, gone with it.
        if [[ -n ${pids[$i]} ]]; then
            nsenter -t "${pids[$i]}" -m -- /bin/sh -c \
                'mountpoint -q /sys/fs/cgroup && exit 0
                 if grep -q "^[0-9]*:name=systemd:" /proc/1/cgroup; then
                     mount -t tmpfs -o mode=755 dmtcp-test-cgroup /sys/fs/cgroup &&
                     mkdir /sys/fs/cgroup/systemd &&
                     mount -t cgroup -o none,name=systemd dmtcp-test-cgroup /sys/fs/cgroup/systemd
                 else
                     mount -t cgroup2 dmtcp-test-cgroup /sys/fs/cgroup
                 fi' \
                || die "mounting cgroup2 on ${names[$i]}"
        fi
        mkdir -p "$dir/spool/${names[$i]}"
        SLURM_CONF=$dir/slurm.conf setsid $(on "${pids[$i]}") /usr/sbin/slurmd -D -N "${names[$i]}" \
            </dev/null >"$dir/log/slurmd-${names[$i]}.out" 2>&1 &
        echo $! >"$dir/run/slurmd-${names[$i]}.launch"
    done

    local tries state= want
    want=$(printf 'idle\n%.0s' "${names[@]}")
    for ((tries = 0; tries < 300; tries++)); do
        state=$(SLURM_CONF=$dir/slurm.conf $(on "$ctl_pid") sinfo -h -N -o '%T' 2>/dev/null || true)
        if [[ $state == "${want%$'\n'}" ]]; then
            echo "NODE=${names[0]}" >>"$dir/slurm.env"
            echo "NODES=$all" >>"$dir/slurm.env"
            return 0
        fi
        for d in "$dir"/run/*.launch; do
            kill -0 "$(cat "$d")" 2>/dev/null \
                || die "$(basename "$d" .launch) exited: $(tail -n 5 "$dir"/log/*.log "$dir"/log/*.out 2>/dev/null)"
        done
        sleep 0.1
    done
    die "nodes not idle after 30 s (state '$state'): $(tail -n 5 "$dir"/log/slurm*.log 2>/dev/null)"
}

# The command prefix that enters a test host's namespaces (none for "").
on() {
    [[ -n $1 ]] && echo "nsenter -t $1 -n -u -m --"
    return 0
}

# Kills a daemon started by `up` (by the pid recorded at launch, checked to
# still be that program) and waits for it.
stop_pid() {
    local pidfile=$1 name=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

down() {
    local dir=$1
    [[ -f $dir/slurm.conf ]] || { rm -rf "$dir"; return 0; }
    local ctl
    ctl=$(cat "$dir/run/ctl.ns" 2>/dev/null || true)
    # The controller's host may be gone already (its namespace with it).
    if [[ -n $ctl ]] && ! kill -0 "$ctl" 2>/dev/null; then
        ctl=none
    fi
    if [[ -f $dir/run/slurmctld.launch && $ctl != none ]]; then
        SLURM_CONF=$dir/slurm.conf timeout 10 $(on "$ctl") scancel --full --quiet --user=root 2>/dev/null || true
        SLURM_CONF=$dir/slurm.conf timeout 10 $(on "$ctl") scancel --full --quiet --user=65534 2>/dev/null || true
        # Let slurmd end the jobs (slurmstepd outlives slurmd by design).
        local i
        for ((i = 0; i < 100; i++)); do
            [[ -z $(SLURM_CONF=$dir/slurm.conf timeout 5 $(on "$ctl") squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    # slurmstepd processes of this cluster's jobs that are left over are
    # found by their working directory (our spool) or environment.
    local f
    for f in "$dir"/run/slurmd*.launch; do
        [[ -e $f ]] && stop_pid "$f" slurmd
    done
    stop_pid "$dir/run/slurmctld.launch" slurmctld
    local p
    for p in $(pgrep -f "^slurmstepd: \[" || true); do
        if [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$dir"* ]] \
            || tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$dir/slurm.conf"; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [[ -f $dir/munge/munged.pid ]]; then
        stop_pid "$dir/munge/munged.pid" munged
    fi
    rm -rf "$dir"
}

case "${1:-}" in
up) [[ $# -ge 4 ]] || die "usage: mkslurm.sh up DIR CTLD_PORT SLURMD_PORT [NAME:PID:ADDR ...]"; shift; up "$@" ;;
down) [[ $# -eq 2 ]] || die "usage: mkslurm.sh down DIR"; down "$2" ;;
*) die "usage: mkslurm.sh up DIR CTLD_PORT SLURMD_PORT [NAME:PID:ADDR ...] | down DIR" ;;
esac
