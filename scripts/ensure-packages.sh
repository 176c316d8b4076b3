#!/usr/bin/env bash
# Install the Debian packages the tests start as real servers, and the jail isolation tier's
# bubblewrap, when missing (needs root for apt). A no-op when every one is there. One line per package: command, then package.
set -euo pipefail

say() { printf 'ensure-packages: %s\n' "$*" >&2; }

missing=()
while read -r command package; do
    [[ -z "$command" ]] && continue
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done <<'PACKAGES'
redis-server redis-server
/usr/lib/postgresql/15/bin/initdb postgresql-15
/usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server
bwrap bubblewrap
prlimit util-linux
PACKAGES

if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
