#!/usr/bin/env bash
# Installs what the media and end-to-end tests need: ffmpeg/ffprobe (fixtures,
# reference HLS, RTMP publisher), GStreamer (a second RTMP publisher: rtmp2sink,
# x264enc, avenc_aac), Chromium (headless playback), etcd (the control-plane benchmark's
# peer), srt-tools (srt-live-transmit, a second SRT publisher), nix-bin (parsing the
# Nix files), nginx with libnginx-mod-rtmp and wrk (the benchmark's peer and load
# tool), the e2e/js npm packages and schemathesis (e2e/py).
# Safe to re-run: system packages are only installed when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cd "$(dirname "$0")/.."
CHROMIUM=/usr/bin/chromium
NODE_MAJOR_MIN=20 # playwright-core requires it
# libfaketime, as the faketime package installs it (the e2e tests preload it by this path).
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1

die() { echo "install-test-deps: $*" >&2; exit 1; }

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ffprobe >/dev/null || missing+=(ffprobe)
[ -x "$CHROMIUM" ] || missing+=("$CHROMIUM")
# The SDI build (`--features sdi`, gstreamer-rs) needs the headers and pkg-config files.
GST_PACKAGES=(gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev pkg-config)
gst_ok() {
  command -v gst-inspect-1.0 >/dev/null &&
    for element in rtmp2sink x264enc avenc_aac flvmux h264parse aacparse videotestsrc audiotestsrc \
      decklinkvideosrc decklinkaudiosrc appsink; do
      gst-inspect-1.0 --exists "$element" || return 1
    done &&
    command -v pkg-config >/dev/null &&
    pkg-config --exists gstreamer-1.0 gstreamer-app-1.0 gstreamer-base-1.0
}
gst_ok || missing+=(gstreamer)
command -v etcd >/dev/null || missing+=(etcd)
command -v srt-live-transmit >/dev/null || missing+=(srt-live-transmit)
# nix-instantiate parses the flake, module and VM test (nixpkgs itself is not fetched).
command -v nix-instantiate >/dev/null || missing+=(nix-instantiate)
# schemathesis (the API fuzz test) goes into a venv: python3 with venv and ensurepip.
python_ok() { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }
python_ok || missing+=(python3-venv)
# The benchmark's peer: nginx with the RTMP module, and wrk.
nginx_ok() { command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]; }
nginx_ok || missing+=(nginx-rtmp)
command -v wrk >/dev/null || missing+=(wrk)
# Clock skew in the failover tests: libfaketime preloaded into a node.
faketime_ok() { [ -f "$FAKETIME_LIB" ]; }
faketime_ok || missing+=(libfaketime)

if [ ${#missing[@]} -gt 0 ]; then
  # ffprobe ships in the ffmpeg package; /usr/bin/chromium in chromium.
  if [ "$(id -u)" -ne 0 ]; then
    die "missing: ${missing[*]}. Install as root with:
  apt-get update && apt-get install -y --no-install-recommends ffmpeg chromium etcd-server srt-tools python3 python3-venv nix-bin nginx-light libnginx-mod-rtmp wrk faketime ${GST_PACKAGES[*]}"
  fi
  command -v apt-get >/dev/null || die "missing: ${missing[*]}, and apt-get is not available to install them"
  apt-get update
  apt-get install -y --no-install-recommends ffmpeg chromium etcd-server srt-tools python3 python3-venv nix-bin nginx-light libnginx-mod-rtmp wrk faketime "${GST_PACKAGES[@]}"
  command -v nix-instantiate >/dev/null || die "nix-bin is installed but nix-instantiate is not on PATH"
  python_ok || die "python3-venv is installed but 'python3 -m venv' cannot work (no venv/ensurepip module)"
  nginx_ok || die "nginx-light and libnginx-mod-rtmp are installed but nginx or its RTMP module is missing"
  command -v wrk >/dev/null || die "wrk is installed but not on PATH"
  faketime_ok || die "faketime is installed but $FAKETIME_LIB is missing"
  command -v etcd >/dev/null || die "etcd-server is installed but etcd is not on PATH"
  command -v srt-live-transmit >/dev/null || die "srt-tools is installed but srt-live-transmit is not on PATH"
  gst_ok || die "GStreamer is installed but lacks an element (rtmp2sink x264enc avenc_aac flvmux decklinkvideosrc appsink ...) or its development files (check ${GST_PACKAGES[*]})"
fi

# Debian's own nodejs is too old for playwright-core, so Node is not installed here.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  die "missing: node and/or npm. Install Node.js >= $NODE_MAJOR_MIN with npm"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge "$NODE_MAJOR_MIN" ] ||
  die "node $(node --version) is too old: Node.js >= $NODE_MAJOR_MIN is required"

# Check that every tool actually runs (captured, not piped into head: pipefail + SIGPIPE).
for tool in ffmpeg ffprobe; do
  out=$("$tool" -version) || die "'$tool -version' fails (is $tool on PATH?)"
  echo "${out%%$'\n'*}"
done
# The Debian launcher script may print harmless warnings on stderr; show them only on failure.
"$CHROMIUM" --version 2>/dev/null || { "$CHROMIUM" --version || true; die "$CHROMIUM --version fails"; }
echo "node $(node --version), npm $(npm --version)"

cd e2e/js
# npm ci starts from an empty node_modules; skip it when the install matches the lock.
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ] &&
  [ -d node_modules/hls.js ] && [ -d node_modules/hls-parser ] && [ -d node_modules/playwright-core ] &&
  [ -d node_modules/video.js ] && [ -d node_modules/shaka-player ]; then
  echo "e2e/js: node_modules up to date"
elif [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# schemathesis and prometheus-client (the reference parser of /metrics) from PyPI into
# e2e/py/venv (pinned in e2e/py/requirements.txt).
cd ../py
if [ -x venv/bin/schemathesis ] && [ venv/.installed -nt requirements.txt ]; then
  echo "e2e/py: schemathesis up to date"
else
  rm -rf venv
  python3 -m venv venv || die "python3 -m venv failed"
  venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt ||
    die "installing schemathesis and prometheus-client from PyPI failed"
  touch venv/.installed
fi
venv/bin/schemathesis --version
