#!/usr/bin/env bash
# Make sure a Docker engine answers: start dockerd if it is installed, install docker.io
# first on a Debian machine where it is not. A no-op when `docker info` already answers.
#
# Env: ACTIONCAGE_DOCKER_WAIT_SECONDS (default 60), how long to wait for a started engine.
set -euo pipefail

wait_seconds="${ACTIONCAGE_DOCKER_WAIT_SECONDS:-60}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

find_dockerd() {
    local candidate
    for candidate in "$(command -v dockerd 2>/dev/null || true)" /usr/sbin/dockerd /usr/bin/dockerd; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

dockerd_running() { pgrep -x dockerd >/dev/null 2>&1; }

log_file() {
    if [[ -w /var/log ]]; then
        printf '/var/log/actioncage-dockerd.log\n'
    else
        mkdir -p "$repo_root/var"
        printf '%s/var/dockerd.log\n' "$repo_root"
    fi
}

# Waits until the engine answers; fails early, showing the log, if dockerd dies.
wait_for_engine() {
    local log="$1" waited=0
    while ! engine_answers; do
        if ((waited >= wait_seconds)); then
            [[ -f "$log" ]] && tail -n 20 "$log" >&2
            die "the Docker engine did not answer within ${wait_seconds}s (log: $log)"
        fi
        if ((waited >= 3)) && ! dockerd_running; then
            [[ -f "$log" ]] && tail -n 20 "$log" >&2
            die "dockerd exited while starting (log: $log)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "the Docker engine answers (after ${waited}s)"
}

start_engine() {
    local dockerd log
    dockerd="$(find_dockerd)" || die "dockerd not found after installing docker.io"
    log="$(log_file)"
    if dockerd_running; then
        # Started by someone else (or by docker.io's postinst) and still coming up.
        say "dockerd is already running; waiting for it to answer"
        wait_for_engine "$log"
        return
    fi
    [[ "$(id -u)" == 0 ]] || die "dockerd is installed but not running, and only root can start it: run 'sudo $dockerd' or 'sudo bash $0'"
    say "starting dockerd in the background (log: $log)"
    # setsid + nohup: the engine outlives this shell, make and CI's process group.
    setsid nohup "$dockerd" >>"$log" 2>&1 </dev/null &
    wait_for_engine "$log"
}

install_docker() {
    [[ "$(id -u)" == 0 ]] || die "no Docker engine is installed; install docker.io (apt-get install docker.io) as root"
    [[ -r /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1 \
        || die "no Docker engine is installed and this is not a Debian machine; install Docker by hand"
    say "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q docker.io >&2
}

if engine_answers; then
    exit 0
fi
if [[ -n "${DOCKER_HOST:-}" ]]; then
    die "DOCKER_HOST=$DOCKER_HOST does not answer; unset it to use a local engine"
fi
if ! find_dockerd >/dev/null || ! command -v docker >/dev/null 2>&1; then
    install_docker
    # docker.io's postinst may have started the engine through its init script.
    if engine_answers; then
        say "the Docker engine answers"
        exit 0
    fi
fi
start_engine
