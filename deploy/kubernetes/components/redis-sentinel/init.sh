#!/bin/sh
# Writes this pod's redis.conf and sentinel.conf into /config (an emptyDir:
# Sentinel rewrites its file). A pod follows the master the Sentinels know
# of; only when none answers (first start) is pod 0 the master.
set -eu
self="$(hostname).revgate-redis-headless"
master=""
if answer=$(redis-cli -h revgate-redis-sentinel -p 26379 --raw sentinel get-master-addr-by-name mymaster 2>/dev/null); then
  master=$(echo "$answer" | head -n 1)
fi
if [ -z "$master" ]; then
  master="revgate-redis-0.revgate-redis-headless"
fi
cat > /config/redis.conf <<CONF
appendonly yes
appendfsync always
maxmemory-policy noeviction
dir /data
replica-announce-ip $self
CONF
if [ "$master" != "$self" ]; then
  echo "replicaof $master 6379" >> /config/redis.conf
fi
cat > /config/sentinel.conf <<CONF
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
sentinel monitor mymaster $master 6379 2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 60000
sentinel parallel-syncs mymaster 1
CONF
