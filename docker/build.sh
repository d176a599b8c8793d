#!/usr/bin/env bash
# Build (and optionally push) the images under the project's naming convention:
#
#   [REGISTRY/]gdro-ray:<package version>-<flavour>      e.g. gdro-ray:0.1.0-gpu
#
#   docker/build.sh cpu|gpu [--push]          REGISTRY=ghcr.io/me docker/build.sh gpu --push
#
# The version is read from pyproject.toml, so image tags move with releases. deploy/ manifests
# reference these names (tests/deploy/test_deploy_manifests.py checks that they agree).
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:?usage: docker/build.sh cpu|gpu [--push]}
[[ -f docker/Dockerfile.$flavour ]] || { echo "no docker/Dockerfile.$flavour" >&2; exit 2; }
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image="gdro-ray:${version}-${flavour}"
[[ -n "${REGISTRY:-}" ]] && image="${REGISTRY%/}/${image}"
docker build -f "docker/Dockerfile.$flavour" -t "$image" .
if [[ "${2:-}" == "--push" ]]; then docker push "$image"; fi
echo "$image"
