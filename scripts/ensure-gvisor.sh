#!/usr/bin/env bash
# The `gvisor` isolation tier: make sure Debian's runsc is installed and registered with the
# Docker engine as the runtime "runsc", with the flags it needs here (`--platform=ptrace`:
# no KVM inside this VM; `--network=none`: sandboxes have no network, and gVisor's own
# netstack must not try to set one up; `--oci-seccomp`: our seccomp allowlist is enforced
# inside the sandbox too, as in every tier; `--host-uds=open`: a script may connect to the
# one host socket bound into its sandbox, the per-run egress proxy's). Says what it does. A no-op when it is all in
# place.
#
# Registering edits /etc/docker/daemon.json (merging, keeping every other key) and asks the
# running dockerd to reload it with SIGHUP: the engine is never restarted, so containers and
# other users of it carry on. When something cannot be done (no root, no apt, a runsc that
# does not start), it says why and exits 0: the control plane then reports the tier
# unavailable (503 sandbox_error naming it) instead of running anything weaker.
#
# Env: ACTIONCAGE_GVISOR_RUNTIME (default runsc), the runtime's name in the engine.
set -euo pipefail

runtime="${ACTIONCAGE_GVISOR_RUNTIME:-runsc}"
config=/etc/docker/daemon.json

say() { printf 'ensure-gvisor: %s\n' "$*" >&2; }
give_up() { say "$* -- the gvisor tier stays unavailable"; exit 0; }

flags='["--platform=ptrace","--network=none","--oci-seccomp","--host-uds=open"]'

registered() {
    timeout 20 docker info --format "{{json (index .Runtimes \"$runtime\")}}" 2>/dev/null |
        grep -qF "\"runtimeArgs\":$flags"
}

if ! command -v runsc >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || give_up "runsc is not installed and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || give_up "runsc is not installed and there is no apt-get"
    say "installing Debian's runsc (gVisor)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends runsc >&2 ||
        give_up "apt-get could not install runsc"
fi
runsc_path="$(command -v runsc)"

if registered; then
    exit 0
fi
[[ $(id -u) -eq 0 ]] || give_up "registering runsc in $config needs root"
command -v python3 >/dev/null 2>&1 || give_up "python3 is needed to edit $config"
say "registering $runsc_path as the engine's runtime \"$runtime\" ($flags) in $config"
mkdir -p "$(dirname "$config")"
python3 - "$config" "$runtime" "$runsc_path" "$flags" <<'PY'
import json, os, sys

path, name, binary, flags = sys.argv[1:5]
try:
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
config.setdefault("runtimes", {})[name] = {
    "path": binary,
    "runtimeArgs": json.loads(flags),
}
tmp = path + ".actioncage-tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
PY
pid="$(pgrep -o -x dockerd || true)"
[[ -n "$pid" ]] || give_up "no dockerd is running to reload $config"
say "asking dockerd (pid $pid) to reload its configuration (SIGHUP; it is not restarted)"
kill -HUP "$pid"
for _ in $(seq 1 50); do
    registered && { say "runtime \"$runtime\" registered"; exit 0; }
    sleep 0.2
done
give_up "dockerd did not pick up the runtime \"$runtime\" (see its log)"
