#!/usr/bin/env bash
# The peers the tests check rbee against, besides the Debian packages of
# install-deps.sh: the official `openai` Python client (PyPI) in its own virtual
# environment, .rbee-cache/py-venv. Idempotent and quick once installed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.rbee-cache/py-venv"

if "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    exit 0
fi
echo "installing the openai client into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check openai >&2
