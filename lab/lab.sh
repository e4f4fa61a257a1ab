#!/usr/bin/env bash
# lab.sh: a lab of real OpenSSH hosts for rbee's tests and demos (see lab/README.md).
#
# Each host is its own sshd with its own host key and address: a network namespace
# with a veth pair when run as root, else a 127.x.y.z loopback address. The script
# writes an rbee inventory for the hosts and tears everything down again.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SSHD=/usr/sbin/sshd
# Netns mode: host I of slot S is 10.(251-S).I.2 behind 10.(251-S).I.1/30 in the root
# namespace; loopback mode uses 127.(251-S).I.2. Slots let several labs (parallel
# tests) run side by side.
MAX_SLOTS=12
MAX_HOSTS=254
LOOPBACK_PORT=2222

usage() {
    cat >&2 <<'EOF'
usage: lab/lab.sh <command> [--dir DIR]

  up N          start hosts hive-1..hive-N (idempotent) and write DIR/inventory.toml
  down          stop every sshd of the lab, delete its namespaces (safe when nothing is up)
  status        list the lab's hosts and whether their sshd runs
  stop-sshd I   stop host I's sshd and its sessions (connections are refused)
  start-sshd I  start host I's sshd again
  cut I         take host I's link down (packets are dropped; netns mode only)
  restore I     bring host I's link back up
  rekey I       give host I a new host key and restart its sshd (DIR/known_hosts follows)

DIR defaults to lab/run next to this script.
EOF
    exit 2
}

die() {
    echo "lab.sh: $*" >&2
    exit 1
}

# ---- arguments ---------------------------------------------------------------------

COMMAND="${1:-}"
[[ -n "$COMMAND" ]] || usage
shift
ARG=""
DIR="$SCRIPT_DIR/run"
while (($#)); do
    case "$1" in
        --dir) [[ $# -ge 2 ]] || usage; DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#--dir=}"; shift ;;
        -h | --help) usage ;;
        *) [[ -z "$ARG" ]] || usage; ARG="$1"; shift ;;
    esac
done
DIR="$(realpath -m -- "$DIR")"

if [[ $EUID -eq 0 ]]; then
    REGISTRY=/run/rbee-lab
else
    REGISTRY="${TMPDIR:-/tmp}/rbee-lab-$EUID"
fi

# ---- naming ------------------------------------------------------------------------

mode() { cat "$DIR/mode"; }
slot() { cat "$DIR/slot"; }
octet() { echo $((251 - $(slot))); }
host_dir() { echo "$DIR/hosts/hive-$1"; }
netns_name() { echo "rbee-lab$(slot)-hive-$1"; }
veth_name() { echo "rbl$(slot)v$1"; }

host_addr() {
    if [[ "$(mode)" == netns ]]; then
        echo "10.$(octet).$1.2"
    else
        echo "127.$(octet).$1.2"
    fi
}

ssh_port() {
    if [[ "$(mode)" == netns ]]; then echo 22; else echo "$LOOPBACK_PORT"; fi
}

require_host_index() {
    if ! [[ "$ARG" =~ ^[0-9]+$ ]] || ((ARG < 1 || ARG > MAX_HOSTS)); then
        die "host index must be 1..$MAX_HOSTS, got '$ARG'"
    fi
    [[ -f "$DIR/mode" ]] || die "no lab in $DIR (run: lab/lab.sh up N --dir $DIR)"
    [[ -d "$(host_dir "$ARG")" ]] || die "no host hive-$ARG in $DIR"
}

# ---- prerequisites -----------------------------------------------------------------

ensure_openssh() {
    if [[ -x "$SSHD" ]] && command -v ssh-keygen >/dev/null && command -v ssh >/dev/null; then
        return
    fi
    [[ $EUID -eq 0 ]] || die "OpenSSH is missing and only root can install it: apt-get install openssh-server openssh-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq openssh-server openssh-client >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq openssh-server openssh-client >/dev/null; } ||
        die "cannot install openssh-server with apt-get"
}

netns_usable() {
    [[ $EUID -eq 0 ]] || return 1
    command -v ip >/dev/null || return 1
    local probe="rbee-lab-probe-$$"
    ip netns add "$probe" 2>/dev/null || return 1
    ip netns del "$probe"
}

# ---- slots: one per running lab, claimed under a lock --------------------------------

# A slot file names the lab directory that owns it. It is stale when that directory no
# longer claims it (deleted without `down`); its leftovers are then cleaned away.
claim_slot() {
    mkdir -p "$REGISTRY"
    exec 9>"$REGISTRY/lock"
    flock 9
    local s owner
    for ((s = 0; s < MAX_SLOTS; s++)); do
        if [[ -f "$REGISTRY/slot-$s" ]]; then
            owner="$(cat "$REGISTRY/slot-$s")"
            if [[ "$owner" == "$DIR" ]]; then
                break
            fi
            if [[ -f "$owner/slot" && "$(cat "$owner/slot")" == "$s" ]]; then
                continue
            fi
            clean_stale_slot "$s" "$owner"
        fi
        echo "$DIR" >"$REGISTRY/slot-$s"
        break
    done
    exec 9>&-
    ((s < MAX_SLOTS)) || die "all $MAX_SLOTS lab slots are in use (see $REGISTRY)"
    echo "$s" >"$DIR/slot"
}

clean_stale_slot() {
    local s="$1" owner="$2" ns pid
    if [[ $EUID -eq 0 ]] && command -v ip >/dev/null; then
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^rbee-lab$s-hive-" || true); do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done
    fi
    # Loopback sshds of a deleted lab are found by the config path only they use.
    for pid in $(pgrep -f -- "-f $owner/hosts/" 2>/dev/null || true); do kill_tree "$pid"; done
    rm -f "$REGISTRY/slot-$s"
}

release_slot() {
    [[ -f "$DIR/slot" ]] || return 0
    local s
    s="$(slot)"
    if [[ -f "$REGISTRY/slot-$s" && "$(cat "$REGISTRY/slot-$s")" == "$DIR" ]]; then
        rm -f "$REGISTRY/slot-$s"
    fi
    rm -f "$DIR/slot"
}

# ---- processes ---------------------------------------------------------------------

# Kills a process and everything below it: sshd's per-connection processes outlive
# the listener otherwise.
kill_tree() {
    local pid="$1" child
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill_tree "$child"; done
    kill -9 "$pid" 2>/dev/null || true
    wait_gone "$pid"
}

# SIGKILL is delivered asynchronously: wait until the process is gone (or a zombie,
# which holds no socket) so that the caller's next step sees it stopped.
wait_gone() {
    local pid="$1" tries=0 state
    while ((tries++ < 500)); do
        state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 0
        [[ -n "$state" && "$state" != Z ]] || return 0
        sleep 0.01
    done
}

sshd_pid() {
    local pidfile pid
    pidfile="$(host_dir "$1")/sshd.pid"
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # The pid must still be this host's sshd, not a recycled number.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(host_dir "$1")/sshd_config" || return 1
    echo "$pid"
}

# Stops host I's sshd and the sessions it serves; what those sessions started in the
# background (workers) keeps running, as it would on a machine whose sshd stopped.
stop_sshd() {
    local i="$1" pid
    if pid="$(sshd_pid "$i")"; then
        kill_tree "$pid"
    fi
    rm -f "$(host_dir "$i")/sshd.pid"
}

# Stops everything running in host I's namespace, then deletes it and its veth pair.
remove_host() {
    local i="$1" ns pid
    stop_sshd "$i"
    [[ "$(mode)" == netns ]] || return 0
    ns="$(netns_name "$i")"
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$(veth_name "$i")" 2>/dev/null || true
}

# ---- one host ----------------------------------------------------------------------

write_sshd_config() {
    local i="$1" dir
    dir="$(host_dir "$i")"
    cat >"$dir/sshd_config" <<EOF
# Written by lab/lab.sh for hive-$i.
Port $(ssh_port)
ListenAddress $(host_addr "$i")
HostKey "$dir/ssh_host_ed25519_key"
PidFile "$dir/sshd.pid"
AuthorizedKeysFile "$DIR/authorized_keys" .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
EOF
    # A test may give the host's sessions an environment: NAME=VALUE lines (no spaces)
    # in its `environment` file, written before the host starts.
    if [[ -f "$dir/environment" ]]; then
        local line
        while IFS= read -r line; do
            [[ -n "$line" ]] && echo "SetEnv $line" >>"$dir/sshd_config"
        done <"$dir/environment"
    fi
}

setup_netns() {
    local i="$1" ns veth net
    ns="$(netns_name "$i")"
    veth="$(veth_name "$i")"
    net="10.$(octet).$i"
    if [[ -e "/run/netns/$ns" ]] && ip link show "$veth" >/dev/null 2>&1; then
        return
    fi
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$veth" 2>/dev/null || true
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip addr add "$net.1/30" dev "$veth"
    ip link set "$veth" up
    ip -n "$ns" addr add "$net.2/30" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
}

failed_sshd() {
    echo "lab.sh: hive-$1: sshd did not start; its log:" >&2
    tail -n 20 "$(host_dir "$1")/sshd.log" >&2 || true
    exit 1
}

start_host() {
    local i="$1" dir pid deadline root
    dir="$(host_dir "$i")"
    mkdir -p "$dir/rbee"
    if [[ ! -f "$dir/ssh_host_ed25519_key" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "hive-$i" -f "$dir/ssh_host_ed25519_key"
    fi
    write_sshd_config "$i"
    if sshd_pid "$i" >/dev/null; then
        return
    fi
    rm -f "$dir/sshd.pid"
    if [[ "$(mode)" == netns ]] && root="$(host_root "$i")"; then
        setup_netns "$i"
        start_rooted_host "$i" "$root"
    elif [[ "$(mode)" == netns ]]; then
        setup_netns "$i"
        # Its own UTS namespace gives the host its own hostname, as a machine has.
        # shellcheck disable=SC2016 # $1..$4 are the inner shell's arguments.
        ip netns exec "$(netns_name "$i")" unshare --uts -- \
            sh -c 'hostname "$1" && exec "$2" -f "$3" -E "$4"' sh \
            "hive-$i" "$SSHD" "$dir/sshd_config" "$dir/sshd.log" || failed_sshd "$i"
    else
        "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || failed_sshd "$i"
    fi
    # sshd writes its pid file once it listens: that is the moment the host is up.
    deadline=$((SECONDS + 10))
    until pid="$(sshd_pid "$i")"; do
        ((SECONDS < deadline)) || failed_sshd "$i"
        sleep 0.02
    done
}

# A host whose `root` file (written by a test before `up`) names a directory holding
# another distribution's root file system (lab/debian-root.sh makes one) is that
# distribution: its own sshd, C library and tools, chrooted into an overlay of the root
# (the root itself stays as it was made; the host's changes go to its `upper`
# directory and outlive restarts of its sshd). /proc, /dev and /sys are the machine's;
# the lab directory is mounted at its own path so the sshd config, keys and logs are
# where the other hosts have them. A root of another architecture (arm64 on this x86-64
# machine) runs under QEMU, which lab/binfmt.sh registers with the kernel first. Netns
# mode only.
host_root() {
    local file
    file="$(host_dir "$1")/root"
    [[ -f "$file" ]] && cat "$file"
}

start_rooted_host() {
    local i="$1" root="$2" dir
    dir="$(host_dir "$i")"
    [[ -x "$root/usr/sbin/sshd" ]] || die "hive-$i: $root has no sshd (make it with lab/debian-root.sh)"
    "$SCRIPT_DIR/binfmt.sh" "$root/usr/sbin/sshd" || die "hive-$i: this machine cannot run $root's programs"
    mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
    # shellcheck disable=SC2016 # $1..$6 are the inner shell's arguments.
    ip netns exec "$(netns_name "$i")" unshare --uts --mount --propagation private -- sh -c '
        set -e
        hostname "$1"
        m="$3/merged"
        mount -t overlay overlay -o "lowerdir=$2,upperdir=$3/upper,workdir=$3/work" "$m"
        mount -t proc proc "$m/proc"
        mount --rbind /dev "$m/dev"
        mount --rbind /sys "$m/sys"
        mkdir -p "$m$4" "$m/run/sshd" "$m/tmp"
        mount --bind "$4" "$m$4"
        exec chroot "$m" /usr/sbin/sshd -f "$5" -E "$6"
    ' sh "hive-$i" "$root" "$dir" "$DIR" "$dir/sshd_config" "$dir/sshd.log" || failed_sshd "$i"
}

# A host whose `user` file (written by a test before `up`) names an account logs that
# account in instead of root: an unprivileged user (no sudo) with the lab's key in its
# own ~/.ssh/authorized_keys, as an operator prepares a new machine, and its hive
# installs under ~/.rbee. The hosts share this machine's accounts, so the account is
# made here (and removed by `down` when the lab made it).
host_user() {
    local file
    file="$(host_dir "$1")/user"
    [[ -f "$file" ]] && cat "$file"
}

prepare_user() {
    local i="$1" name group home
    name="$(host_user "$i")"
    [[ "$name" =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die "hive-$i: '$name' is not a user name"
    [[ $EUID -eq 0 ]] || die "hive-$i: only root can make the account $name (netns mode)"
    if ! id -u "$name" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash "$name"
        touch "$(host_dir "$i")/user.created"
    fi
    # Without PAM, sshd refuses an account whose password is locked ('!'), keys and
    # all; '*' is an account with no password, which keys may still log in to.
    usermod -p '*' "$name"
    group="$(id -gn "$name")"
    home="$(getent passwd "$name" | cut -d: -f6)"
    install -d -m 700 -o "$name" -g "$group" "$home/.ssh"
    install -m 600 -o "$name" -g "$group" "$DIR/id_ed25519.pub" "$home/.ssh/authorized_keys"
}

remove_user() {
    local i="$1"
    [[ -f "$(host_dir "$i")/user.created" ]] || return 0
    userdel --remove "$(host_user "$i")" 2>/dev/null || true
    rm -f "$(host_dir "$i")/user.created"
}

# ---- the whole lab -----------------------------------------------------------------

host_indices() {
    local dir
    for dir in "$DIR"/hosts/hive-*; do
        [[ -d "$dir" ]] && echo "${dir##*/hive-}"
    done | sort -n
}

write_known_hosts() {
    local i port addr key
    port="$(ssh_port)"
    : >"$DIR/known_hosts.tmp"
    for i in $(host_indices); do
        addr="$(host_addr "$i")"
        key="$(awk '{print $1, $2}' "$(host_dir "$i")/ssh_host_ed25519_key.pub")"
        if [[ "$port" == 22 ]]; then
            echo "$addr $key" >>"$DIR/known_hosts.tmp"
        else
            echo "[$addr]:$port $key" >>"$DIR/known_hosts.tmp"
        fi
    done
    mv "$DIR/known_hosts.tmp" "$DIR/known_hosts"
}

write_inventory() {
    local n="$1" i user
    if [[ "$(mode)" == netns ]]; then user=root; else user="$(id -un)"; fi
    {
        echo "# Written by lab/lab.sh up $n: OpenSSH hosts in $(mode) mode (slot $(slot))."
        echo "[defaults]"
        echo "ssh_user = \"$user\""
        echo "ssh_port = $(ssh_port)"
        echo "identity_file = \"$DIR/id_ed25519\""
        echo "known_hosts = \"$DIR/known_hosts\""
        echo "install_dir = \"~/.rbee\""
        for ((i = 1; i <= n; i++)); do
            echo
            echo "[hives.hive-$i]"
            echo "host = \"$(host_addr "$i")\""
            if user="$(host_user "$i")"; then
                echo "ssh_user = \"$user\""
                echo "install_dir = \"~/.rbee\""
            elif host_root "$i" >/dev/null; then
                # Its own file system: the home directory, as on a machine of its own.
                echo "install_dir = \"~/.rbee\""
            else
                # The hosts share one file system, so each gets its own install directory.
                echo "install_dir = \"$(host_dir "$i")/rbee\""
            fi
            echo "groups = [\"lab\"]"
        done
    } >"$DIR/inventory.toml.tmp"
    mv "$DIR/inventory.toml.tmp" "$DIR/inventory.toml"
}

cmd_up() {
    local n="$ARG" i failed=0
    if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_HOSTS)); then
        die "up needs a host count 1..$MAX_HOSTS, got '$n'"
    fi
    ensure_openssh
    mkdir -p "$DIR/hosts"
    if [[ ! -f "$DIR/mode" ]]; then
        if netns_usable; then echo netns >"$DIR/mode"; else echo loopback >"$DIR/mode"; fi
    fi
    claim_slot
    if [[ ! -f "$DIR/id_ed25519" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C rbee-lab -f "$DIR/id_ed25519"
    fi
    cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
    # sshd refuses to start as root without its privilege-separation directory.
    [[ $EUID -ne 0 ]] || mkdir -p /run/sshd
    for ((i = 1; i <= n; i++)); do
        if host_user "$i" >/dev/null; then prepare_user "$i"; fi
    done

    local pids=()
    for ((i = 1; i <= n; i++)); do
        start_host "$i" &
        pids+=("$!")
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    ((failed == 0)) || die "some hosts did not start (lab left as is; run down to clean up)"

    write_known_hosts
    write_inventory "$n"
    echo "lab: $n host(s) up in $(mode) mode; inventory $DIR/inventory.toml"
    for ((i = 1; i <= n; i++)); do
        echo "  hive-$i  $(ssh_user_at "$i")  port $(ssh_port)"
    done
}

ssh_user_at() {
    local user
    if user="$(host_user "$1")"; then
        echo "$user@$(host_addr "$1")"
    elif [[ "$(mode)" == netns ]]; then
        echo "root@$(host_addr "$1")"
    else
        echo "$(id -un)@$(host_addr "$1")"
    fi
}

cmd_down() {
    if [[ ! -f "$DIR/mode" ]]; then
        echo "lab: nothing up in $DIR"
        return
    fi
    local i pids=()
    for i in $(host_indices); do
        remove_host "$i" &
        pids+=("$!")
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    for i in $(host_indices); do remove_user "$i"; done
    release_slot
    rm -f "$DIR/mode"
    echo "lab: down ($DIR)"
}

cmd_status() {
    [[ -f "$DIR/mode" ]] || { echo "lab: nothing up in $DIR"; return; }
    local i state
    echo "lab in $DIR: $(mode) mode, slot $(slot)"
    for i in $(host_indices); do
        if sshd_pid "$i" >/dev/null; then state=running; else state=stopped; fi
        echo "  hive-$i  $(ssh_user_at "$i")  sshd $state"
    done
}

# Takes the host's side of its veth pair down or up: the root side keeps its address
# and route, so packets to the host are lost (connects time out, sessions hang)
# rather than refused.
set_link() {
    [[ "$(mode)" == netns ]] || die "$COMMAND needs netns mode (run as root)"
    ip -n "$(netns_name "$ARG")" link set eth0 "$1"
    if [[ "$1" == up ]]; then
        # Address resolution failed while the link was down; forget that at once
        # instead of answering "no route to host" until the entry expires.
        ip neigh flush dev "$(veth_name "$ARG")" 2>/dev/null || true
        ip -n "$(netns_name "$ARG")" neigh flush dev eth0 2>/dev/null || true
    fi
}

case "$COMMAND" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop-sshd) require_host_index; stop_sshd "$ARG" ;;
    start-sshd) require_host_index; start_host "$ARG" ;;
    cut) require_host_index; set_link down ;;
    restore) require_host_index; set_link up ;;
    rekey)
        require_host_index
        stop_sshd "$ARG"
        rm -f "$(host_dir "$ARG")"/ssh_host_ed25519_key*
        start_host "$ARG"
        write_known_hosts
        ;;
    *) usage ;;
esac
