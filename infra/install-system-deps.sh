#!/usr/bin/env bash
# System tools the project needs beside Python: Java 17+ and Maven (the local Kafka broker),
# and Debian's docker-compose (only to validate the compose files in the tests).
# Installs what is missing when it can (root with apt-get); otherwise says what is missing.
set -euo pipefail

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
want_compose=0
if ! command -v docker-compose >/dev/null && ! (command -v docker >/dev/null && docker compose version >/dev/null 2>&1); then
  want_compose=1
fi

if [ "${#missing[@]}" -eq 0 ] && [ "$want_compose" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "erastream needs: ${missing[*]} (install them with your package manager)" >&2
    exit 1
  fi
  echo "note: no docker compose here; the compose-file tests will be skipped" >&2
  exit 0
fi
[ "$want_compose" -eq 1 ] && missing+=(docker-compose)
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  # docker-compose is optional: retry without it
  apt-get install -y -qq --no-install-recommends "${missing[@]/docker-compose}" >/dev/null
fi
