#!/usr/bin/env bash
# Installs the Debian packages a command needs, and only those; does nothing when all
# are there.
#
#   scripts/install-deps.sh main    the main job (scripts/run-local-cluster.sh): OpenSSH's
#                                   server and client for the lab hosts, iproute2 for
#                                   their network namespaces
#   scripts/install-deps.sh tests   the test command: the above, and curl, python3-venv
#                                   for the Python peers, prometheus for promtool (which
#                                   checks /metrics), chromium with its WebDriver (the
#                                   dashboard test, headless), vagrant (which
#                                   validates the Vagrant lab), debootstrap (the lab's
#                                   Debian 11 host) and binutils (strip and objdump for
#                                   the portable binaries)
set -euo pipefail

set_name="${1:-tests}"
need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
case "$set_name" in
    main) ;;
    tests)
        command -v curl >/dev/null || need+=(curl)
        python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
        command -v promtool >/dev/null || need+=(prometheus)
        [[ -x /usr/bin/chromium ]] || need+=(chromium)
        command -v chromedriver >/dev/null || need+=(chromium-driver)
        command -v vagrant >/dev/null || need+=(vagrant)
        command -v debootstrap >/dev/null || need+=(debootstrap)
        command -v objdump >/dev/null || need+=(binutils)
        ;;
    *) echo "usage: $0 main|tests" >&2; exit 2 ;;
esac
exec "$(dirname "${BASH_SOURCE[0]}")/install-packages.sh" "${need[@]}"
