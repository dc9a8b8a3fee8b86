#!/usr/bin/env bash
# Test hosts for the multi-host tests: N network namespaces joined by a
# bridge (in a hub namespace of its own: the machine's own network is not
# touched), addresses 198.18.<net>.1.. (198.18.0.0/15 is set aside for
# network tests), each with its own hostname (UTS namespace) and its own
# sshd on port 22 with a host key and an authorized client key made for the
# test. The file system is shared (one file system, as with NFS); each
# host's sshd runs in a mount namespace of its own where /run is a fresh
# tmpfs (for sshd's privilege separation directory, so the machine's /run
# is not touched) and /etc/passwd is a copy in which uid 65534 has a shell
# (so the uid-65534 tests can log in; nothing on the machine changes) and
# root and uid 65534 have HOME as their home directory (the test's, shared
# by every host as on a cluster: the image key lives there).
#
#   mkhosts.sh up DIR ID N HOME
#                              make hosts h0..h(N-1); writes DIR/hosts.env,
#                              DIR/ssh_config, DIR/bin/ssh (a wrapper that
#                              uses them), DIR/id_ed25519 (the client key)
#   mkhosts.sh down DIR        kill every process in the hosts, remove them
#
# ID is a short unique id (letters and digits) naming the namespaces.
# Needs root, ip (iproute2), nsenter/unshare (util-linux), /usr/sbin/sshd.
set -euo pipefail

die() { echo "mkhosts: $*" >&2; exit 1; }

up() {
    local dir=$1 id=$2 n=$3 home=$4
    [[ $(id -u) -eq 0 ]] || die "needs root"
    [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found (install openssh-server)"
    command -v ip >/dev/null || die "ip not found (install iproute2)"
    mkdir -p "$dir/bin"
    chmod 755 "$dir" "$dir/bin"
    local hub="dmtcp-$id-hub"
    # A third octet from the id keeps concurrent test hosts apart even if
    # the namespaces were ever joined.
    local net=$(( $(printf '%s' "$id" | cksum | cut -d' ' -f1) % 250 + 1 ))
    : >"$dir/hosts.env"
    echo "HUB=$hub" >>"$dir/hosts.env"
    ip netns add "$hub"
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge
    ip -n "$hub" link set br0 up
    ssh-keygen -q -t ed25519 -N '' -C "dmtcp-test-client" -f "$dir/id_ed25519"
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    chmod 644 "$dir/authorized_keys"
    # /etc/passwd as the test hosts see it: uid 65534 gets a shell; root
    # and uid 65534 get the test's home.
    awk -F: -v OFS=: -v home="$home" '
        $3 == 0 || $3 == 65534 { $6 = home }
        $3 == 65534 { $7 = "/bin/sh" }
        { print }' /etc/passwd >"$dir/passwd"
    chmod 644 "$dir/passwd"
    : >"$dir/known_hosts"
    {
        echo "Host *"
        echo "  IdentityFile $dir/id_ed25519"
        echo "  IdentitiesOnly yes"
        echo "  UserKnownHostsFile $dir/known_hosts"
        echo "  GlobalKnownHostsFile /dev/null"
        echo "  StrictHostKeyChecking yes"
        echo "  CheckHostIP no"
        echo "  BatchMode yes"
        echo "  ConnectTimeout 30"
        echo "  LogLevel ERROR"
    } >"$dir/ssh_config.tail"
    : >"$dir/ssh_config"
    local i
    for ((i = 0; i < n; i++)); do
        local h="h$i" ns="dmtcp-$id-h$i" addr="198.18.$net.$((i + 1))"
        # Recorded before it exists, so that `down` removes it even if
        # something below fails.
        echo "NETNS=$ns" >>"$dir/hosts.env"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$hub" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "p$i" master br0 up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$dir/$h-hostkey"
        echo "$h,$addr $(cut -d' ' -f1,2 "$dir/$h-hostkey.pub")" >>"$dir/known_hosts"
        cat >"$dir/$h-sshd_config" <<CONF
ListenAddress $addr
Port 22
HostKey $dir/$h-hostkey
PidFile none
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
PermitUserEnvironment no
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
CONF
        {
            echo "Host $h"
            echo "  HostName $addr"
        } >>"$dir/ssh_config"
        # sshd -D stays in the foreground; setsid so the test's process
        # group signals do not reach it. Started in its own mount and UTS
        # namespaces (see the top of this file), inside the host's netns.
        setsid ip netns exec "$ns" unshare --mount --uts --propagation private -- /bin/sh -c '
            set -e
            hostname "$1"
            mount -t tmpfs -o mode=755 dmtcp-test-run /run
            mkdir -m 755 /run/sshd
            mount --bind "$2" /etc/passwd
            exec /usr/sbin/sshd -D -e -f "$3" 2>>"$4"
        ' sh "$h" "$dir/passwd" "$dir/$h-sshd_config" "$dir/$h-sshd.log" </dev/null >/dev/null 2>&1 &
        local pid=$!
        echo "HOST_$i=$h $ns $addr $pid" >>"$dir/hosts.env"
    done
    cat "$dir/ssh_config.tail" >>"$dir/ssh_config"
    rm -f "$dir/ssh_config.tail"
    chmod 644 "$dir/ssh_config" "$dir/known_hosts"
    cat >"$dir/bin/ssh" <<WRAP
#!/bin/sh
# ssh to the test hosts (made by tests/hosts/mkhosts.sh): the test's config,
# key and known hosts; nothing of the user's ~/.ssh is read or written.
exec /usr/bin/ssh -F $dir/ssh_config "\$@"
WRAP
    chmod 755 "$dir/bin/ssh"
    # Wait for every sshd to listen (it has its own netns: ask there).
    for ((i = 0; i < n; i++)); do
        local ns="dmtcp-$id-h$i" tries=0
        until ip netns exec "$ns" /bin/sh -c "exec 3<>/dev/tcp/198.18.$net.$((i + 1))/22" 2>/dev/null \
            || { command -v ss >/dev/null && ip netns exec "$ns" ss -Hltn 2>/dev/null | grep -q ':22 '; }; do
            tries=$((tries + 1))
            [[ $tries -lt 500 ]] || die "sshd of h$i did not start: $(cat "$dir/h$i-sshd.log" 2>/dev/null)"
            sleep 0.02
        done
    done
    echo "N=$n" >>"$dir/hosts.env"
}

down() {
    local dir=$1
    [[ -f "$dir/hosts.env" ]] || return 0
    local hub
    hub=$(sed -n 's/^HUB=//p' "$dir/hosts.env")
    local line
    # Everything that runs in a host: sshd, sessions, computations.
    for line in $(sed -n 's/^NETNS=//p' "$dir/hosts.env"); do
        local pids
        for _ in 1 2 3 4 5; do
            pids=$(ip netns pids "$line" 2>/dev/null || true)
            [[ -n $pids ]] || break
            kill -9 $pids 2>/dev/null || true
            sleep 0.05
        done
        ip netns del "$line" 2>/dev/null || true
    done
    [[ -n $hub ]] && ip netns del "$hub" 2>/dev/null || true
}

case "${1:-}" in
up) [[ $# -eq 5 ]] || die "usage: mkhosts.sh up DIR ID N HOME"; up "$2" "$3" "$4" "$5" ;;
down) [[ $# -eq 2 ]] || die "usage: mkhosts.sh down DIR"; down "$2" ;;
*) die "usage: mkhosts.sh up DIR ID N HOME | down DIR" ;;
esac
