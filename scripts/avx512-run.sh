#!/usr/bin/env bash
# Runs an x86-64 Linux program on an emulated CPU with AVX-512, for the code paths this
# machine's CPU cannot take (AMD EPYC here: no AVX-512, and QEMU's TCG emulates none).
# Bochs does: it boots a minimal Linux (Debian's kernel, busybox, an initramfs holding
# the program and the libraries `ldd` lists, at the same paths), runs the program as
# the child of PID 1 with its stdout and stderr on the serial console, which this
# script streams here, and exits with the program's status.
#
#   scripts/avx512-run.sh [--cpu MODEL] [--add PATH]... [--env VAR=VALUE]... PROGRAM [ARGS...]
#
#   --cpu MODEL    Bochs's CPU model, default tigerlake (AVX512F/DQ/CD/BW/VL/IFMA/VBMI/
#                  VBMI2/VNNI/BITALG/VPOPCNTDQ); corei7_icelake_u and corei7_skylake_x
#                  also have AVX-512; `bochs-bin --help cpu` lists them all
#   --add PATH     also copy this file or directory into the guest, at the same path
#                  (an executable file brings the libraries `ldd` lists for it too)
#   --env VAR=VAL  set this in the program's environment (besides PATH, HOME=/root,
#                  TMPDIR=/tmp and TERM=dumb)
#
# The program starts in the same working directory as here (empty in the guest unless
# --add brings it), with /proc, /sys, /dev and a writable / (the initramfs), stdin
# /dev/null, one CPU. Booting takes 40-60 s (a 120 MB program adds some 15 s). Bochs
# interprets every instruction, some 40-50 million a second here: plain integer code
# runs about 250 times slower than on the host; a 512-bit FMA, done in software lane
# by lane, takes some 0.4 us, a VPDPBUSD 0.07 us. So run one test or a filtered few
# inside, not a suite. The guest's clock reads the TSC at
# its nominal 2.4 GHz, one tick per instruction: inside, time passes some 60 times
# slower than here, so the program's own timeouts see a CPU of normal speed.
#
# Environment: AVX512_RUN_TIMEOUT (seconds, default 1800: past it Bochs is killed and
# the script fails), AVX512_RUN_MEGS (guest memory, default 2048; the guest sees at
# most some 3 GB, whatever the value: the initramfs lives in it, so the program's size
# counts twice while it unpacks), AVX512_RUN_CACHE (where the kernel is kept, default
# /var/cache/rbee-avx512), AVX512_RUN_KEEP=1 (keep the work directory: ISO, bochsrc,
# Bochs's log, the console's transcript), AVX512_RUN_VERBOSE=1 (show the kernel's boot
# messages and all the CPU's flags too).
# Needs root the first time, to install bochs, bochs-sdl, bochsbios, vgabios,
# busybox-static, isolinux, syslinux-common and xorriso from Debian.
set -euo pipefail

usage() {
    echo "usage: $0 [--cpu MODEL] [--add PATH]... [--env VAR=VALUE]... PROGRAM [ARGS...]" >&2
    exit 2
}

cpu=tigerlake
adds=()
envs=()
while (($#)); do
    case "$1" in
        --cpu) cpu="${2:?--cpu needs a model}"; shift 2 ;;
        --add) [[ -e "${2:-}" ]] || { echo "error: --add: no such path: ${2:-}" >&2; exit 2; }
               adds+=("$(realpath -s "$2")"); shift 2 ;;
        --env) [[ "${2:-}" == *=* ]] || usage; envs+=("$2"); shift 2 ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
(($#)) || usage
program="$(command -v "$1" || true)"
[[ -n "$program" && -f "$program" ]] || { echo "error: no program $1" >&2; exit 2; }
program="$(realpath -s "$program")"
shift

timeout_s="${AVX512_RUN_TIMEOUT:-1800}"
megs="${AVX512_RUN_MEGS:-2048}"
cache="${AVX512_RUN_CACHE:-/var/cache/rbee-avx512}"
verbose="${AVX512_RUN_VERBOSE:-0}"

# --- the host's tools: Debian packages, installed once ---
# Debian's Bochs has no `nogui` display: SDL2's with SDL's dummy video driver is the
# headless one (the `term` display would take over a terminal).
need=()
[[ -x /usr/bin/bochs-bin ]] || need+=(bochs)
[[ -e /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_sdl2_gui.so ]] || need+=(bochs-sdl)
[[ -f /usr/share/bochs/BIOS-bochs-latest ]] || need+=(bochsbios)
[[ -f /usr/share/vgabios/vgabios.bin ]] || need+=(vgabios)
/bin/busybox cpio --help >/dev/null 2>&1 || need+=(busybox-static)
[[ -f /usr/lib/ISOLINUX/isolinux.bin ]] || need+=(isolinux)
[[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ]] || need+=(syslinux-common)
command -v xorriso >/dev/null || need+=(xorriso)
"$(dirname "${BASH_SOURCE[0]}")/install-packages.sh" "${need[@]}"

# --- the guest's kernel: Debian's 6.12, unpacked from its package, not installed ---
# Its serial console (8250), initramfs and ACPI power-off are built in: no modules.
# Not bookworm's 6.1: under Bochs it faults in a loop right after "LSM: Security
# Framework initializing".
kernel="$cache/vmlinuz-6.12"
if [[ ! -f "$kernel" ]]; then
    package_of() { apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
    package="$(package_of linux-image-6.12-amd64)"
    if [[ -z "$package" ]]; then
        apt-get update -qq >&2 || true
        package="$(package_of linux-image-6.12-amd64)"
    fi
    [[ -n "$package" ]] || { echo "error: apt knows no linux-image-6.12-amd64 (Debian 12's updates have it)" >&2; exit 1; }
    echo "avx512-run: fetching $package into $cache ..." >&2
    mkdir -p "$cache"
    unpack="$(mktemp -d /tmp/avx512-kernel.XXXXXX)"
    chmod 755 "$unpack"  # apt-get download drops to the _apt user where it can
    (cd "$unpack" && apt-get download -qq "$package" >&2 && dpkg -x ./*.deb x)
    cp "$unpack"/x/boot/vmlinuz-* "$kernel.tmp"
    mv "$kernel.tmp" "$kernel"
    echo "$package" >"$cache/kernel-package"
    rm -rf "$unpack"
fi

work="$(mktemp -d /tmp/avx512-run.XXXXXX)"
bochs_pid=""
tail_pid=""
cleanup() {
    set +e
    [[ -n "$bochs_pid" ]] && kill -9 "$bochs_pid" 2>/dev/null
    [[ -n "$tail_pid" ]] && kill "$tail_pid" 2>/dev/null
    if [[ "${AVX512_RUN_KEEP:-0}" == 1 ]]; then
        echo "avx512-run: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the initramfs: busybox, /init, the program, its libraries, the --add paths ---
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,root}
cp /bin/busybox "$root/bin/busybox"
copy_in() { # PATH: into the guest at the same path, symlinks followed
    mkdir -p "$root$(dirname "$1")"
    cp -rL "$1" "$root$(dirname "$1")/"
}
copy_in "$program"
for path in "${adds[@]}"; do
    copy_in "$path"
done
# The libraries of the program and of any added executable (a helper it spawns).
while read -r lib; do
    [[ -e "$root$lib" ]] || copy_in "$lib"
done < <(for file in "$program" "${adds[@]}"; do
             [[ -f "$file" && -x "$file" ]] && ldd "$file" 2>/dev/null | grep -o '/[^ ]*'
         done | sort -u)
mkdir -p "$root$PWD"

# The command line and environment, single-quoted for the guest's shell.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
command_line="$(quote "$program")"
for arg in "$@"; do command_line+=" $(quote "$arg")"; done
env_lines=""
for assignment in "${envs[@]}"; do env_lines+="export $(quote "$assignment")"$'\n'; done

# The markers frame the program's output on the console; the kernel's messages, if
# any, come before. The console is raw so the program's bytes pass unchanged.
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
exec </dev/null >/dev/ttyS0 2>&1
stty raw -echo <&1
grep -m1 '^flags' /proc/cpuinfo
echo rbee-avx512-start
$env_lines
cd $(quote "$PWD")
$command_line
echo "rbee-avx512-exit-status=\$?"
# The UART sends at 115200 baud of guest time: wait until it has sent everything (its
# count of bytes sent stops moving) before powering off.
sent=; now=\$(grep '^0:' /proc/tty/driver/serial)
while [ "\$sent" != "\$now" ]; do sent=\$now; sleep 0.2; now=\$(grep '^0:' /proc/tty/driver/serial); done
poweroff -f
EOF
chmod +x "$root/init"
# Not compressed: decompressing is slow under Bochs, reading the CD is not.
(cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"
rm -rf "$root"

# --- the boot CD: isolinux, the kernel, the initramfs ---
# The kernel's command line: the console on COM1; clearcpuid because Bochs 2.7 reports
# a zero-sized PKRU state and an uncompacted size for XSAVES/XSAVEC, on which Linux
# turns XSAVE off, and AVX with it; the rest skips boot work that costs tens of seconds
# when every instruction is interpreted (the console at 115200 baud, mitigations, the
# security modules, page zeroing and shuffling, crypto self-tests, the W+X check).
cmdline="console=ttyS0,115200 loglevel=3 clearcpuid=pku,xsaves,xsavec nokaslr mitigations=off"
cmdline+=" init_on_alloc=0 page_alloc.shuffle=0 audit=0 lsm=capability rodata=off"
cmdline+=" cryptomgr.notests tsc=reliable no_timer_check"
[[ "$verbose" == 1 ]] || cmdline+=" quiet"
iso="$work/iso"
mkdir -p "$iso/isolinux"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
cp "$kernel" "$iso/vmlinuz"
mv "$work/initrd" "$iso/initrd"
cat >"$iso/isolinux/isolinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd
  APPEND $cmdline
EOF
xorriso -as mkisofs -quiet -R -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$iso" 2>"$work/xorriso.log" \
    || { cat "$work/xorriso.log" >&2; exit 1; }
rm -rf "$iso"

# --- Bochs: headless, the console to a file, time driven by instructions ---
# `clock: sync=none` lets the guest's clock follow the instructions run, so it never
# waits for real time; the sound and speaker are off since Bochs's mixer thread
# crashes without a sound card. Debian builds Bochs with its debugger, which stops
# before the first instruction: the -rc file says continue.
serial="$work/serial.txt"
: >"$serial"
echo c >"$work/debugger.rc"
cat >"$work/bochsrc" <<EOF
config_interface: textconfig
display_library: sdl2
memory: guest=$megs, host=$((megs < 2048 ? megs : 2048))
cpu: model=$cpu, count=1, ips=50000000, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path="$work/boot.iso", status=inserted
boot: cdrom
clock: sync=none, time0=local
com1: enabled=1, mode=file, dev="$serial"
sound: driver=dummy
speaker: enabled=0
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
debug: action=ignore
EOF
start=$SECONDS
SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy \
    bochs-bin -q -f "$work/bochsrc" -rc "$work/debugger.rc" </dev/null >"$work/bochs.out" 2>&1 &
bochs_pid=$!

bochs_running() { # a zombie counts as gone
    [[ -r /proc/$bochs_pid/stat ]] && [[ "$(cut -d' ' -f3 "/proc/$bochs_pid/stat")" != Z ]]
}
fail() {
    echo "error: avx512-run: $1; the console's last lines:" >&2
    tail -n 15 "$serial" >&2
    echo "Bochs's last words:" >&2
    grep -v -e 'lt_dl' -e 'PLUGIN' "$work/bochs.out" | tail -n 8 >&2
    exit "${2:-1}"
}

# --- stream the console: the program's output lies between the two markers ---
exec 3< <(exec tail -n +1 -f "$serial")
tail_pid=$!
status=""
started=0
pending=""
quiet_after_exit=0
while :; do
    if ((SECONDS - start >= timeout_s)); then
        fail "timed out after ${timeout_s}s (AVX512_RUN_TIMEOUT); Bochs killed" 124
    fi
    rc=0
    IFS= read -r -t 1 line <&3 || rc=$?
    if ((rc > 128)); then
        # No whole line for a second: keep what came; once Bochs has gone, two such
        # seconds mean the console is read to the end.
        pending+="$line"
        bochs_running || ((++quiet_after_exit < 2)) || break
        continue
    elif ((rc)); then
        break
    fi
    line="$pending$line"
    pending=""
    if [[ "$line" == *rbee-avx512-exit-status=* ]]; then
        prefix="${line%rbee-avx512-exit-status=*}"
        [[ -n "$prefix" ]] && printf '%s\n' "$prefix"
        status="${line##*rbee-avx512-exit-status=}"
        status="${status%%[^0-9]*}"
        break
    fi
    if [[ "$line" == *"Kernel panic - not syncing"* ]]; then
        printf '%s\n' "$line" >&2
        fail "the guest's kernel panicked"
    elif ((started)); then
        printf '%s\n' "$line"
    elif [[ "$line" == rbee-avx512-start ]]; then
        started=1
        echo "avx512-run: booted in $((SECONDS - start))s" >&2
    elif [[ "$line" == flags* ]]; then
        # The SIMD flags only (AVX512_RUN_VERBOSE=1 shows them all).
        flags="$(tr -s ' \t' '\n' <<<"${line#*:}" | grep -E '^(avx|fma|f16c|gfni|vaes|vpclmul)' | tr '\n' ' ' || true)"
        [[ "$verbose" == 1 ]] && flags="${line#*:}"
        echo "avx512-run: guest CPU $cpu:${flags% }" >&2
    elif [[ "$verbose" == 1 ]]; then
        printf '%s\n' "$line" >&2
    fi
done
if [[ -z "$status" ]]; then
    [[ -n "$pending" ]] && ((started)) && printf '%s\n' "$pending"
    fail "Bochs stopped before the program finished"
fi
echo "avx512-run: done in $((SECONDS - start))s, exit status $status" >&2
exit "$status"
