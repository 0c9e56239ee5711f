#!/usr/bin/env bash
# What the tests need on the machine, installed when missing (Debian, as root): a real etcd for the
# test bed (etcd-server 3.4, etcd-client) and a real sshd for the fleet tests (openssh-server).
# Debian starts a package's service on install; the tests run their own etcd and sshd on free
# loopback ports, so the service a package started here is stopped again, by its own unit or init
# script. Nothing is ever stopped by process name: on a control-plane node the cluster's own etcd
# shows up in the process table as "etcd" too.
set -euo pipefail

# K8S_ENCRYPT_SETUP_ASSUME_MISSING=etcd,ssh treats those as missing (for the script's own test).
missing_forced() { [[ ",${K8S_ENCRYPT_SETUP_ASSUME_MISSING:-}," == *",$1,"* ]]; }
have_etcd() { ! missing_forced etcd && command -v etcd >/dev/null && command -v etcdctl >/dev/null; }
have_sshd() { ! missing_forced ssh && { command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; } && command -v ssh-keygen >/dev/null; }

packages=()
services=()
have_etcd || { packages+=(etcd-server etcd-client); services+=(etcd); }
have_sshd || { packages+=(openssh-server); services+=(ssh); }
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing for the tests: ${packages[*]}. Run as root: apt-get update && apt-get install -y ${packages[*]} (or: sudo bash scripts/setup-test-deps.sh)" >&2
  exit 1
fi
echo "installing ${packages[*]} (Debian packages) for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${packages[@]}" >/dev/null

# Stop only what these packages started: their systemd unit, or their init script without systemd.
for svc in "${services[@]}"; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl stop "$svc.service" >/dev/null 2>&1 || true
  elif command -v service >/dev/null; then
    service "$svc" stop >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$svc" ]; then
    "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
  fi
done
