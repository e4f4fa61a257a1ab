#!/usr/bin/env bash
# Installs the named Debian packages (the scripts call it with the ones they found
# missing): as root, quietly, without recommends; otherwise says which are missing and
# how to install them. Does nothing when given none.
set -euo pipefail

(($#)) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "error: missing packages: $*" >&2
    echo "hint: run as root, or: sudo apt-get install -y --no-install-recommends $*" >&2
    exit 1
fi
echo "installing $* ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "$@" >&2
