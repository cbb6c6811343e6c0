#!/usr/bin/env bash
# Installs everything Thaw needs on a fresh Debian machine: OS packages, the Python package with its
# dependencies at the hash-checked versions of requirements.lock (pip's cache is kept, so a second run is quick),
# the Kafka jars (Maven Central, checksums enforced, cached under ~/.cache/thaw/stack), the MovieLens wheel, the
# OpenMoji npm package (from its lock, install scripts off), and the ONNX export of the text model. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -d /usr/share/games/singularity/music ] || need+=(singularity-music)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)   # the observability e2e test scrapes a worker with it
if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

stamp_dir="${HOME}/.cache/thaw"
mkdir -p "$stamp_dir"
# reinstall only when pyproject.toml or the lock changed (pip still verifies the editable install points here).
# The dependencies come from requirements.lock, exact versions with their sha256 (--require-hashes: a file whose
# bytes differ from the lock is refused), then the project itself without resolving anything again (--no-deps).
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16):$(pwd)"
if [ "$(cat "$stamp_dir/pip.stamp" 2>/dev/null)" != "$want" ] || ! $PY -c "import thaw, faust, torch, pymilvus, milvus, importlinter" 2>/dev/null; then
  echo "setup: pip install --require-hashes -r requirements.lock, then -e . --no-deps"
  $PY -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
  $PY -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp_dir/pip.stamp"
fi

echo "setup: Kafka jars"
$PY -m thaw stack fetch >/dev/null
echo "setup: datasets and models"
$PY -c "from workloads.datasets import fetch_recbole_wheel; fetch_recbole_wheel()" >/dev/null
$PY -c "from workloads.imagetext import fetch_openmoji; fetch_openmoji()" >/dev/null
$PY -m thaw corpus imagetext build --no-progress >/dev/null   # ~20 s once, ~1 s when built
$PY -m thaw models export-text >/dev/null
echo "setup: done"
