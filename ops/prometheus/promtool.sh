#!/usr/bin/env bash
# Runs promtool (Prometheus's config and rule checker) with the given arguments, fetching
# it on first use. Usage: bash ops/prometheus/promtool.sh check config ops/prometheus/prometheus.yml
#
# Which promtool: $PROMTOOL if set, else the cached copy, else one on PATH, else Debian's
# `prometheus` package is downloaded (`apt-get download`: nothing is installed and no
# service is started) and only usr/bin/promtool is extracted into
# ${RECSTREAM_CACHE:-$HOME/.cache/recstream}/promtool/<version>/. The first fetch needs the
# apt package lists; when they are missing or stale it runs `apt-get update` (root only).
set -euo pipefail

if [ -n "${PROMTOOL:-}" ]; then
    exec "$PROMTOOL" "$@"
fi

cache=${RECSTREAM_CACHE:-$HOME/.cache/recstream}/promtool
if [ -x "$cache/current/promtool" ]; then
    exec "$cache/current/promtool" "$@"
fi
if command -v promtool >/dev/null 2>&1; then
    exec promtool "$@"
fi

fail() {
    echo "promtool.sh: $*" >&2
    exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "no promtool on PATH and no apt-get to fetch one; set PROMTOOL"

candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}'; }
refresh() {
    [ "$(id -u)" -eq 0 ] || fail "$1; run 'apt-get update' as root, or set PROMTOOL"
    echo "promtool.sh: apt-get update ($1)" >&2
    apt-get update -qq >&2
}

version=$(candidate)
if [ -z "$version" ]; then
    refresh "apt lists no 'prometheus' package"
    version=$(candidate)
    [ -n "$version" ] || fail "apt has no 'prometheus' package"
fi

echo "promtool.sh: fetching promtool from Debian's prometheus $version (first run only)" >&2
mkdir -p "$cache"
download=$(mktemp -d "${TMPDIR:-/tmp}/recstream-promtool.XXXXXX")
staging=$(mktemp -d "$cache/.fetch.XXXXXX")
chmod 755 "$staging"
trap 'rm -rf "$download" "$staging"' EXIT
# apt downloads as user _apt when it can: give that user the directory (root only).
chmod 755 "$download"
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$download"; fi
if ! (cd "$download" && apt-get download -qq "prometheus=$version" >&2); then
    # Stale lists name a version the mirror no longer has: refresh once and retry.
    refresh "apt-get download prometheus=$version failed"
    version=$(candidate)
    (cd "$download" && apt-get download -qq "prometheus=$version" >&2) ||
        fail "apt-get download prometheus=$version failed"
fi
dpkg-deb -x "$download"/prometheus_*.deb "$download/root"
cp "$download/root/usr/bin/promtool" "$staging/promtool"
"$staging/promtool" --version >/dev/null 2>&1 || fail "the extracted promtool does not run"
# Publish by renames: a concurrent run sees either no cache or a complete one.
target="$cache/$(printf '%s' "$version" | tr -c 'A-Za-z0-9.+_-' '_')"
[ -d "$target" ] || mv -T "$staging" "$target" 2>/dev/null || true
ln -sfn "$(basename "$target")" "$cache/.current.$$"
mv -T "$cache/.current.$$" "$cache/current"
rm -rf "$download" "$staging"
trap - EXIT
exec "$cache/current/promtool" "$@"
