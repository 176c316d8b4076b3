#!/usr/bin/env bash
# Builds the sandbox image (actioncage-sandbox:latest) from Dockerfile.sandbox, with no image
# registry: when BASE_IMAGE is not present locally, it builds a Debian bookworm base with
# debootstrap instead. Skips the build when an image built from the same inputs exists.
#
# Usage: sandbox-image/build.sh [--force]
#   --force   rebuild the sandbox image even when it is up to date (the base image is kept)
# Env:
#   BASE_IMAGE                default python:3.11-slim, else the local debootstrap base
#   ACTIONCAGE_SANDBOX_IMAGE  the tag to build, default actioncage-sandbox:latest
#   PYTHON                    host interpreter with pip for downloading the wheels
#   ACTIONCAGE_SANDBOX_REQUIREMENTS
#                             the operator's extra packages, a pip requirements file (default
#                             sandbox-image/extra-requirements.txt when it exists): built into
#                             wheels on this host, installed offline into the image, and part
#                             of the inputs, so changing it rebuilds the image (a new digest)
# Prints progress on stderr and, last on stdout, the image ID (also in var/sandbox-image.digest).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$repo_root/sandbox-image"
image="${ACTIONCAGE_SANDBOX_IMAGE:-actioncage-sandbox:latest}"
default_base="python:3.11-slim"
base_image="${BASE_IMAGE:-$default_base}"
local_base="actioncage-base:bookworm"
wheels="$here/wheels"
digest_file="$repo_root/var/sandbox-image.digest"
inputs_label="io.actioncage.inputs-sha256"
# The legacy builder: BuildKit needs the buildx plugin, which this machine's CLI lacks.
export DOCKER_BUILDKIT=0

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x "$repo_root/.venv/bin/python" ]]; then
    python="$repo_root/.venv/bin/python"
else
    python="$(command -v python3)" || die "no python3 on PATH; set PYTHON"
fi

timeout 20 docker info >/dev/null 2>&1 \
    || die "no Docker engine answers; run 'bash scripts/ensure-docker.sh' (or 'make engine')"
[[ -f "$repo_root/runtime/actioncage_runtime/__main__.py" ]] \
    || die "runtime/actioncage_runtime/__main__.py is missing: nothing to put in the image"

mkdir -p "$repo_root/var"
# One build at a time (make, the CLI and the test fixture may all ask at once).
exec 9>"$repo_root/var/sandbox-image.lock"
flock 9

# The operator's extra packages: their requirements file and the wheels this host builds for
# it (with their dependencies, held to the pinned versions above) go into build/extra/, which
# the image build copies and installs offline. No extra file: an empty requirements file.
extra_src="${ACTIONCAGE_SANDBOX_REQUIREMENTS:-$here/extra-requirements.txt}"
extra="$here/build/extra"
mkdir -p "$extra"
if [[ -f "$extra_src" ]] && grep -qv '^[[:space:]]*\(#.*\)\{0,1\}$' "$extra_src"; then
    if ! cmp -s "$extra_src" "$extra/requirements.txt" || [[ ! -f "$extra/.stamp" ]]; then
        say "building wheels for the extra packages in $extra_src with $python"
        rm -rf "$extra"
        mkdir -p "$extra"
        cp "$extra_src" "$extra/requirements.txt"
        (cd "$(dirname "$extra_src")" && "$python" -m pip wheel --disable-pip-version-check \
            --no-cache-dir -q -w "$extra" -c "$here/requirements.txt" -r "$extra_src") >&2 \
            || die "pip wheel failed for $extra_src"
        touch "$extra/.stamp"
    fi
else
    rm -rf "$extra"
    mkdir -p "$extra"
    printf '# no extra packages\n' >"$extra/requirements.txt"
fi

# Everything that goes into the image, so a stale image is rebuilt without --force.
inputs_hash() {
    (
        cd "$repo_root"
        printf 'base=%s\n' "$base_image"
        find Dockerfile.sandbox .dockerignore sandbox-image/provision.sh \
            sandbox-image/requirements.txt sandbox-image/installer.txt \
            sandbox-image/build/extra runtime/actioncage_runtime -type f \
            ! -path '*/__pycache__/*' ! -name '*.py[co]' ! -name .stamp -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

record() {
    local id
    id="$(image_id "$image")" || die "$image is missing after the build"
    printf '%s\n' "$id" >"$digest_file"
    say "$image is $id (recorded in var/sandbox-image.digest)"
    printf '%s\n' "$id"
}

want="$(inputs_hash)"
if ((!force)) && have="$(docker image inspect --format "{{index .Config.Labels \"$inputs_label\"}}" "$image" 2>/dev/null)"; then
    if [[ "$have" == "$want" ]]; then
        say "$image is up to date; skipping the build (--force rebuilds)"
        record
        exit 0
    fi
    say "$image is out of date with its inputs; rebuilding"
fi

debian_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        # First URIs of a stanza whose suites include bookworm (not bookworm-security).
        uri="$(awk '
            /^URIs:/ { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print u; exit } }
            /^$/ { u = "" }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

rootfs=""
cleanup_rootfs() {
    [[ -n "$rootfs" && -d "$rootfs" ]] || return 0
    # debootstrap mounts proc and sys inside; never delete through a live mount.
    local m
    for m in $(awk -v r="$rootfs" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$rootfs"
}
trap cleanup_rootfs EXIT

build_local_base() {
    [[ "$(id -u)" == 0 ]] || die "building $local_base with debootstrap needs root"
    if ! command -v debootstrap >/dev/null 2>&1 && [[ ! -x /usr/sbin/debootstrap ]]; then
        command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get"
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
    fi
    local mirror start
    mirror="$(debian_mirror)"
    start=$SECONDS
    rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/actioncage-base.XXXXXX")"
    say "building $local_base with debootstrap from $mirror (a few minutes, once)"
    PATH="/usr/sbin:/sbin:$PATH" debootstrap --variant=minbase --include=python3 \
        bookworm "$rootfs/root" "$mirror" >&2 \
        || die "debootstrap failed (see $rootfs/root/debootstrap/debootstrap.log)"
    local r="$rootfs/root"
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
        "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
        "$r"/usr/share/locale/* "$r"/usr/share/lintian "$r"/var/log/*.log \
        "$r"/var/log/apt/* "$r"/dev/* "$r"/proc/* "$r"/sys/* "$r"/tmp/* "$r"/root/.cache
    tar -C "$r" --numeric-owner -c . \
        | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/usr/bin/python3"]' \
            --message "debootstrap --variant=minbase --include=python3 bookworm" \
            - "$local_base" >/dev/null
    cleanup_rootfs
    rootfs=""
    say "built $local_base in $((SECONDS - start))s"
}

if image_id "$base_image" >/dev/null; then
    say "base image $base_image is present"
elif [[ "$base_image" != "$default_base" ]]; then
    say "base image $base_image is not present; trying docker pull (20 s at most)"
    timeout 20 docker pull "$base_image" >&2 \
        || die "base image $base_image is neither present nor pullable"
elif image_id "$local_base" >/dev/null; then
    say "$default_base is not present; using the local base $local_base"
    base_image="$local_base"
else
    say "$default_base is not present and no registry is reachable here"
    build_local_base
    base_image="$local_base"
fi

# Pure-python wheels only, so they install into any Python >= 3.11 base, offline.
stamp="$wheels/.stamp"
if [[ ! -f "$stamp" || "$here/requirements.txt" -nt "$stamp" || "$here/installer.txt" -nt "$stamp" ]]; then
    say "downloading wheels into sandbox-image/wheels/ with $python"
    rm -rf "$wheels"
    mkdir -p "$wheels"
    "$python" -m pip download --disable-pip-version-check --no-cache-dir -q \
        --only-binary=:all: --platform any --implementation py --abi none --python-version 3.11 \
        -d "$wheels" -r "$here/requirements.txt" -r "$here/installer.txt" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2) >&2 \
        || die "pip download failed"
    touch "$stamp"
fi

old_id="$(image_id "$image" || true)"
start=$SECONDS
say "building $image from $base_image"
no_cache=()
((force)) && no_cache=(--no-cache)
docker build --force-rm "${no_cache[@]}" -f "$repo_root/Dockerfile.sandbox" \
    --build-arg "BASE_IMAGE=$base_image" \
    --label "$inputs_label=$want" \
    --label "io.actioncage.base-image=$base_image" \
    --label "io.actioncage.extra-requirements-sha256=$(sha256sum <"$extra/requirements.txt" | cut -d' ' -f1)" \
    -t "$image" "$repo_root" >&2 \
    || die "docker build failed"
say "built $image in $((SECONDS - start))s"
new_id="$(image_id "$image")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
record
