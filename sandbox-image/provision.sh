#!/bin/sh
# Runs as root inside `docker build` (see Dockerfile.sandbox), in two phases so that a change
# to the runtime only re-runs the second:
#   packages  installs the wheels offline, wires /opt/actioncage, adds the sandbox user
#   runtime   checks and byte-compiles the copied runtime, hardens and verifies the image
# POSIX sh: the base image may have no bash.
set -eu

build=/tmp/actioncage-build
opt=/opt/actioncage
uid=10001

fail() { echo "provision: error: $*" >&2; exit 1; }

python_binary() {
    py="$(command -v python3 || true)"
    [ -n "$py" ] || fail "the base image has no python3 on PATH"
    readlink -f "$py"
}

# The site directory pip installed into: site.py scans it even under -I.
site_dir() {
    "$1" -I -c '
import os, site, requests
where = os.path.dirname(os.path.dirname(os.path.realpath(requests.__file__)))
assert where in map(os.path.realpath, site.getsitepackages()), where
print(where)'
}

strip_setid() {
    find / -xdev -perm /6000 -type f -exec chmod a-s {} +
}

packages() {
    real_py="$(python_binary)"
    "$real_py" -I -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail "$real_py is older than Python 3.11"

    # pip runs from its own wheel (pip can execute from the zip) and is never installed, so
    # the image keeps no installer. --break-system-packages: Debian's python is
    # EXTERNALLY-MANAGED, and this image is its only user.
    set -- "$build"/wheels/pip-*.whl
    [ -f "$1" ] || fail "no pip wheel in $build/wheels"
    "$real_py" -I "$1/pip" install --no-index --find-links "$build/wheels" --only-binary=:all: \
        --break-system-packages --root-user-action=ignore --disable-pip-version-check \
        --no-cache-dir --no-warn-script-location --progress-bar off \
        -r "$build/requirements.txt"
    # The operator's extra packages: wheels built on the host by build.sh, installed offline.
    if ls "$build"/extra/*.whl >/dev/null 2>&1; then
        "$real_py" -I "$1/pip" install --no-index --find-links "$build/extra" \
            --find-links "$build/wheels" --only-binary=:all: \
            --break-system-packages --root-user-action=ignore --disable-pip-version-check \
            --no-cache-dir --no-warn-script-location --progress-bar off "$build"/extra/*.whl
    fi
    rm -rf "$build/wheels" "$build/extra" /root/.cache

    site="$(site_dir "$real_py")"
    mkdir -p "$opt"
    echo "$opt" > "$site/actioncage.pth"
    ln -sfn "$real_py" "$opt/python"

    # The sandbox user: no home, no login shell, no password.
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    grep -q "^[^:]*:[^:]*:$uid:" /etc/group || echo "sandbox:x:$uid:" >> /etc/group
    if ! grep -q "^[^:]*:[^:]*:$uid:" /etc/passwd; then
        echo "sandbox:x:$uid:$uid:actioncage sandbox:/nonexistent:$nologin" >> /etc/passwd
        [ ! -f /etc/shadow ] || echo "sandbox:!:1::::::" >> /etc/shadow
    fi

    # Byte-compile now: at run time the root filesystem is read-only and the user not root.
    # The stdlib is usually compiled already; odd test files in a base must not fail us.
    stdlib="$("$real_py" -I -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
    "$real_py" -I -m compileall -q -j 0 -x '/(test|tests|idle_test|lib2to3)/' "$stdlib" \
        >/dev/null || echo "provision: warning: some stdlib files did not byte-compile" >&2
    "$real_py" -I -m compileall -q -j 0 "$site" >/dev/null
    strip_setid
}

runtime() {
    [ -f "$opt/actioncage_runtime/__main__.py" ] || fail "no actioncage_runtime/__main__.py was copied"
    chown -R 0:0 "$opt"
    chmod -R u=rwX,go=rX "$opt"
    "$opt/python" -I -m compileall -q -j 0 "$opt" >/dev/null
    rm -rf "$build" /root/.cache
    strip_setid

    # Prove it works for the user who will run it.
    if command -v setpriv >/dev/null 2>&1; then
        setpriv --reuid="$uid" --regid="$uid" --clear-groups "$opt/python" -I -B -c "
import os, sys, requests, holidays, actioncage_runtime
assert os.getuid() == $uid, os.getuid()
assert '$opt' in sys.path, sys.path"
    fi
}

case "${1:-}" in
    packages) packages ;;
    runtime) runtime ;;
    *) fail "usage: provision.sh packages|runtime" ;;
esac
