#!/usr/bin/env bash
# Re-fetches the console's one vendored library, web-vitals, into src/http/console/vendor/.
#
# The console is plain HTML, CSS and ES modules embedded in the binary (src/http/console.rs),
# so `cargo build` needs no Node. Only this script does: it runs `npm pack` (the registry's
# ordinary client) for the pinned version, and copies the ES-module build and its licence.
# The trailing `sourceMappingURL` comment is dropped: the map is not shipped, and a browser
# with its developer tools open would otherwise ask the API port for it.
#
# Usage: scripts/vendor-console.sh [VERSION]   (default: the version committed)
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:-6.2.3}"
dest=src/http/console/vendor
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "web-vitals@$version" >/dev/null && tar xzf web-vitals-*.tgz)
mkdir -p "$dest"
grep -v '^//# sourceMappingURL=' "$work/package/dist/web-vitals.js" >"$dest/web-vitals.js"
cp "$work/package/LICENSE" "$dest/web-vitals.LICENSE.txt"
echo "web-vitals $version -> $dest/web-vitals.js ($(wc -c <"$dest/web-vitals.js") bytes)"
