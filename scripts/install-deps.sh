#!/usr/bin/env bash
# Installs the Debian packages rbee's tests and demo use: OpenSSH's server for the lab
# hosts, iproute2 for their network namespaces, curl, python3-venv for the Python
# peers, prometheus for promtool, which checks the queen's /metrics, and chromium with
# its WebDriver (chromedriver), which drive the dashboard test headless, and vagrant,
# which validates the Vagrant lab. Does nothing when all are there.
set -euo pipefail

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v promtool >/dev/null || need+=(prometheus)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v vagrant >/dev/null || need+=(vagrant)
exec "$(dirname "${BASH_SOURCE[0]}")/install-packages.sh" "${need[@]}"
