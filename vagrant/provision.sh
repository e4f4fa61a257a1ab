#!/bin/sh
# Provisions one machine of rbee's Vagrant lab (run as root by `vagrant up`): sshd, and
# an `rbee` user that logs in with the operator's key. The queen machine also gets the
# operator's private key, so a queen there reaches the hives.
set -eu

name="$1"
key="${RBEE_OPERATOR_KEY:?the Vagrantfile passes the operator public key}"

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server
fi
systemctl enable --now ssh >/dev/null 2>&1 || service ssh start

id rbee >/dev/null 2>&1 || useradd --create-home --shell /bin/bash rbee
# sshd refuses a locked account with UsePAM off; '*' is no password, not locked.
usermod -p '*' rbee
install -d -m 700 -o rbee -g rbee /home/rbee/.ssh
printf '%s\n' "$key" >/home/rbee/.ssh/authorized_keys
chown rbee:rbee /home/rbee/.ssh/authorized_keys
chmod 600 /home/rbee/.ssh/authorized_keys

if [ "$name" = queen ] && [ -f /tmp/rbee-operator-key ]; then
    install -m 600 -o rbee -g rbee /tmp/rbee-operator-key /home/rbee/.ssh/id_ed25519
    rm -f /tmp/rbee-operator-key
fi
echo "rbee: $name is ready for the operator's key"
