#!/bin/sh
# A cluster on this machine, on loopback: three nats-server processes with
# JetStream (one cluster, the logs), three etcd members (the shard map, the
# pods' leases, the catalog) and four slimvecd (2 shards x 2 replica sets:
# r0-s0, r0-s1, r1-s0, r1-s1), each a router for all of them. Runs in
# the foreground until Ctrl-C, then stops everything (SIGTERM: the pods
# snapshot). Data stays under ./slimvec-cluster for the next start.
#
#   deploy/cluster/local.sh [BINARY]     (deploy/setup.sh cluster builds first)
#
# Clients use any pod: 127.0.0.1:50061 (r0-s0), :50062 (r0-s1), :50063 (r1-s0),
# :50064 (r1-s1); metrics on :9471..:9474. NATS: 127.0.0.1:4231..4233, its
# monitoring on :8231..8233. etcd: 127.0.0.1:2391..2393 (clients), 2381..2383
# (peers): `ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2391 get --prefix /slimvec/`.
#
# Debian's nats-server 2.9.10 acknowledges a write once a quorum holds it in
# memory (it has no sync_interval): good for trying things. Production runs
# nats-server 2.10.23 or later with deploy/cluster/nats-server.conf
# (sync_interval: always); see README, Cluster mode.
set -eu

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${1:-$ROOT/build/service/slimvecd}
DATA=${SLIMVEC_CLUSTER_DIR:-$ROOT/slimvec-cluster}
mkdir -p "$DATA"
PIDS=""

stop() {
    trap - INT TERM EXIT
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

ROUTES="nats-route://127.0.0.1:6231,nats-route://127.0.0.1:6232,nats-route://127.0.0.1:6233"
for i in 1 2 3; do
    conf="$DATA/nats-$i.conf"
    cat > "$conf" <<EOF
server_name: n$i
listen: 127.0.0.1:423$i
http: 127.0.0.1:823$i
jetstream { store_dir: "$DATA/nats-$i" }
cluster { name: slimvec-local, listen: 127.0.0.1:623$i, routes: [ $ROUTES ] }
EOF
    nats-server -c "$conf" >> "$DATA/nats-$i.log" 2>&1 &
    PIDS="$PIDS $!"
done

INITIAL="e1=http://127.0.0.1:2381,e2=http://127.0.0.1:2382,e3=http://127.0.0.1:2383"
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$DATA/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:239$i" --advertise-client-urls "http://127.0.0.1:239$i" \
        --listen-peer-urls "http://127.0.0.1:238$i" --initial-advertise-peer-urls "http://127.0.0.1:238$i" \
        --initial-cluster "$INITIAL" --initial-cluster-state new --initial-cluster-token slimvec-local \
        >> "$DATA/etcd-$i.log" 2>&1 &
    PIDS="$PIDS $!"
done

NATS=nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233
ETCD=127.0.0.1:2391,127.0.0.1:2392,127.0.0.1:2393
n=1
for set in r0 r1; do
    for shard in 0 1; do
        "$BIN" --listen 127.0.0.1:5006$n --metrics-listen 127.0.0.1:947$n \
            --data-dir "$DATA/$set-s$shard" --cluster-nats "$NATS" --cluster-etcd "$ETCD" \
            --pod-name "$set-s$shard" --shards 2 --shard "$shard" \
            --replica-set "$set" \
            >> "$DATA/$set-s$shard.log" 2>&1 &
        PIDS="$PIDS $!"
        n=$((n + 1))
    done
done
echo "local cluster: pods on 127.0.0.1:50061..50064, logs in $DATA; Ctrl-C stops it"
wait
