#!/usr/bin/env bash
# Starts a single-node Kafka 4.1.1 (KRaft, broker + controller in one JVM) on
# 127.0.0.1:PORT with config, data and logs under DATA_DIR, waits until it serves, and
# prints the bootstrap address. Stop it with: bash ops/kafka/stop.sh DATA_DIR
# A DATA_DIR from an earlier start is kept: start again with the same ports to restart.
# Usage: bash ops/kafka/start.sh PORT DATA_DIR [CONTROLLER_PORT]
# Optional second, secured listener (tests of credentials), from the environment:
#   KAFKA_SASL_PORT      its port: SASL_PLAINTEXT with SCRAM-SHA-512, or SASL_SSL when
#   KAFKA_SSL_KEYSTORE   names a PKCS12 keystore (password in KAFKA_SSL_KEYSTORE_PASSWORD)
#   KAFKA_SCRAM_USERS    "name=password ..." SCRAM-SHA-512 users, added at format time
#   KAFKA_ACLS=1         StandardAuthorizer: no ACL, no access (PLAINTEXT is a super user)
set -euo pipefail
port=$1
data=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
controller_port=${3:-}
lib=${RECSTREAM_CACHE:-$HOME/.cache/recstream}/kafka-4.1.1/lib

# Jars: resolved once into a cache outside the clone. Resolve into a temp dir and rename
# it, so a killed download never leaves a half-filled cache behind.
if [ ! -d "$lib" ]; then
    echo "kafka: fetching the broker jars into $lib (first run only)" >&2
    mkdir -p "$(dirname "$lib")"
    tmp=$(mktemp -d "$lib.partial.XXXXXX")
    mvn -B -ntp -f "$here/pom.xml" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1 ||
        { tail -n 40 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; exit 1; }
    rm -f "$tmp.log"
    mv -T "$tmp" "$lib" 2>/dev/null || rm -rf "$tmp" # lost a race with a parallel run: fine
fi

# The controller listens on a second port (never the client port).
while [ -z "$controller_port" ] || [ "$controller_port" = "$port" ]; do
    controller_port=$(bash "$here/../ports.sh" 1)
done

listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
protocols=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
secured=
if [ -n "${KAFKA_SASL_PORT:-}" ]; then
    sasl=SASL_PLAINTEXT
    [ -z "${KAFKA_SSL_KEYSTORE:-}" ] || sasl=SASL_SSL
    listeners+=,$sasl://127.0.0.1:$KAFKA_SASL_PORT
    protocols+=,$sasl:$sasl
    listener=$(echo "$sasl" | tr '[:upper:]' '[:lower:]')
    secured="sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.$listener.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required ;"
    if [ -n "${KAFKA_SSL_KEYSTORE:-}" ]; then
        secured+="
ssl.keystore.type=PKCS12
ssl.keystore.location=$KAFKA_SSL_KEYSTORE
ssl.keystore.password=${KAFKA_SSL_KEYSTORE_PASSWORD:-}"
    fi
fi
if [ "${KAFKA_ACLS:-}" = 1 ]; then
    secured+="
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS"
fi

mkdir -p "$data/logs" "$data/log"
cat >"$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=$listeners
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$data/log
num.partitions=4
auto.create.topics.enable=true
# One node: every internal topic has replication factor 1.
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Small box: few threads, small internal topics (created on first use).
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=4
$secured
PROPS
chmod 600 "$data/server.properties" # it may hold the keystore's password

logging=("-Dkafka.logs.dir=$data/logs" "-Dlog4j2.configurationFile=$here/log4j2.properties")

# Format the storage (cluster id: Kafka's Uuid form, 16 random bytes in url-safe base64),
# unless an earlier start formatted it: a restart on the same DATA_DIR (and ports) keeps
# its cluster id, topics and records (a new id would make the format tool refuse).
if [ ! -f "$data/log/meta.properties" ]; then
    cluster_id=$(python3 -c 'import base64, os
while (u := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"):
    pass
print(u)')
    # (A short-lived JVM: C1 only and serial GC make it ~1.5 s faster.)
    scram=()
    for user in ${KAFKA_SCRAM_USERS:-}; do
        scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]")
    done
    java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${logging[@]}" \
        -cp "$lib/*" kafka.tools.StorageTool format --standalone --ignore-formatted \
        -t "$cluster_id" -c "$data/server.properties" "${scram[@]}" >"$data/logs/format.out" 2>&1 ||
        { cat "$data/logs/format.out" >&2; exit 1; }
fi

# Start the broker in the background (on a restart, the previous run's log moves aside so
# that the readiness check below reads this run's only).
if [ -f "$data/logs/server.log" ]; then mv -f "$data/logs/server.log" "$data/logs/server.log.1"; fi
java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true "${logging[@]}" \
    -cp "$lib/*" kafka.Kafka "$data/server.properties" >"$data/logs/kafka.out" 2>&1 &
pid=$!
echo "$pid" >"$data/kafka.pid"

# Ready = client port accepts connections (opened once unfenced) and the log says so.
fail() {
    echo "kafka: $1; last log lines:" >&2
    tail -n 40 "$data/logs/server.log" "$data/logs/kafka.out" >&2 2>/dev/null || true
    bash "$here/stop.sh" "$data" >&2 || true
    exit 1
}
deadline=$((SECONDS + 180))
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
    grep -q 'Kafka Server started' "$data/logs/server.log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "the broker exited"
    [ "$SECONDS" -lt "$deadline" ] || fail "not ready after 180 s"
    sleep 0.2
done
echo "127.0.0.1:$port"
