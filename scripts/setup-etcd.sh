#!/usr/bin/env bash
# The test bed stores data in a real etcd (Debian's etcd-server 3.4). Installs it when missing.
set -euo pipefail
if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "etcd is not installed. Run as root: apt-get update && apt-get install -y etcd-server etcd-client" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq etcd-server etcd-client >/dev/null
# Debian starts a system etcd on 2379; the bed uses its own, so keep the system one out of the way.
(systemctl stop etcd 2>/dev/null || service etcd stop 2>/dev/null || pkill -x etcd || true) >/dev/null 2>&1
