#!/usr/bin/env bash
# Run by test_ray_up.py as root inside private namespaces (unshare --pid --mount --net --fork --mount-proc):
# the README's `ray up` loop with cluster_configs/ray/laptop.yaml, touching nothing outside.
#   usage: ray_up_loop.sh REPO VENV PYTHON_HOME WHEELS
# Private here: loopback only; /tmp, /run and root's home are fresh tmpfs (REPO, the test's VENV, the
# PYTHON_HOME it links to and WHEELS are bound back in where they lived there); sshd on 127.0.0.1; pip
# installs from WHEELS (no index, no network).
set -euo pipefail
REPO=$1 VENV=$2 PYTHON_HOME=$3 WHEELS=$4
step() { echo "== $(date +%T) $*"; }

ip link set lo up
mount -t tmpfs tmpfs /mnt && mkdir /mnt/tmp /mnt/root
mount --rbind /tmp /mnt/tmp && mount --rbind /root /mnt/root
mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /root && chmod 700 /root
for path in "$REPO" "$VENV" "$PYTHON_HOME" "$WHEELS"; do
  case "$path" in /tmp/*|/root/*) mkdir -p "$path" && mount --bind "/mnt$path" "$path" ;; esac
done
umount -l /mnt
mount -t tmpfs tmpfs /run && mkdir -p /run/sshd

step "sshd on 127.0.0.1 with a fresh key"
mkdir -m 700 /root/.ssh
ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
ssh-keygen -q -t ed25519 -N '' -f /run/sshd/host_key
/usr/sbin/sshd -f /dev/null -o ListenAddress=127.0.0.1 -o HostKey=/run/sshd/host_key -o PidFile=/run/sshd.pid \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UsePAM=no
mkdir -p /root/.config/pip
printf '[global]\nno-index = true\nfind-links = %s\n' "$WHEELS" > /root/.config/pip/pip.conf

step "the laptop file with its one documented edit (ssh_user)"
sed 's/^  ssh_user: rsd /  ssh_user: root/' "$REPO/cluster_configs/ray/laptop.yaml" > /root/laptop.yaml
grep -q '^  ssh_user: root' /root/laptop.yaml
export PATH="$VENV/bin:$PATH"
cd "$REPO"

step "ray up (a token in ~/.ray, as an embedded rsd-ray run leaves one: the head uses token authentication)"
ray get-auth-token --generate > /dev/null
ray up -y /root/laptop.yaml --no-config-cache
test ! -e /root/rsd-ray/.venv && test ! -e /root/rsd-ray/.git && echo "rsync_exclude: no .venv, no .git on the head"

step "rsd-ray run --address auto on the head (ray exec: the login shell's PATH)"
ray exec /root/laptop.yaml 'rsd-ray run --address auto --rack atom-server --model tiny-llama --tp 4 --duration 2 --out ~/head.json --no-progress'
python3 -c "import json; d = json.load(open('/root/head.json')); print('head run:', d['status'], d['emulator']['executor'], d['requests']['completed'], 'completed')"

step "rsd-ray run --address 127.0.0.1:6379 outside the login shell (the token is found)"
~/rsd-ray-venv/bin/rsd-ray run --address 127.0.0.1:6379 --rack atom-server --model tiny-llama --tp 4 --duration 2 \
  --out /root/here.json --no-progress > /dev/null
python3 -c "import json; print('joined run:', json.load(open('/root/here.json'))['status'])"
if ~/rsd-ray-venv/bin/ray status --address 127.0.0.1:6379 > /dev/null 2>&1; then echo "plain ray status worked?"; exit 1; fi
RAY_AUTH_MODE=token ~/rsd-ray-venv/bin/ray status --address 127.0.0.1:6379 | grep atom_card

step "ray down"
ray down -y /root/laptop.yaml
sleep 2
left=$(pgrep -a -f 'raylet|gcs_server' || true)
if [ -n "$left" ]; then echo "LEFT RUNNING: $left"; exit 1; fi
echo "no raylet or gcs_server left"
kill "$(cat /run/sshd.pid)"
