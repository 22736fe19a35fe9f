#!/usr/bin/env bash
# Starts a single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1.
#
#   scripts/kafka/start.sh            # free port, prints e.g. 127.0.0.1:41234
#   KAFKA_PORT=9092 scripts/kafka/start.sh
#
# Storage is formatted in a fresh temp dir. Writes $KAFKA_RUN_DIR/{broker.pid,
# bootstrap,workdir}; stdout gets only the bootstrap address. Stop with stop.sh.
#
# The broker also listens with SASL_PLAINTEXT (mechanism PLAIN) on a second port
# (KAFKA_SASL_PORT, else a free one) for tests of secured clients; its address goes
# to $KAFKA_RUN_DIR/sasl-bootstrap (not to stdout). The one user is
# KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD (default flowstage / flowstage-secret).
#
# And with SSL (TLS, server certificate only, no client authentication) on a third port
# (KAFKA_SSL_PORT, else a free one): a throwaway CA and a broker certificate for 127.0.0.1 /
# localhost are made at each start (openssl if installed, else Java's keytool) in the
# workdir. The address goes to $KAFKA_RUN_DIR/ssl-bootstrap, the CA certificate (PEM, what
# clients trust: ssl.ca.location) to $KAFKA_RUN_DIR/ca.pem.
#
# And with SASL_SSL (mechanism SCRAM-SHA-512, the same user and certificate) on a fourth port
# (KAFKA_SASL_SSL_PORT, else a free one), as managed clusters are usually reached; its address
# goes to $KAFKA_RUN_DIR/sasl-ssl-bootstrap.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$KAFKA_SCRIPTS_DIR/fetch.sh"

if [[ -f "$KAFKA_RUN_DIR/broker.pid" ]] && kill -0 "$(cat "$KAFKA_RUN_DIR/broker.pid")" 2>/dev/null; then
    echo "start.sh: a broker is already running (pid $(cat "$KAFKA_RUN_DIR/broker.pid")) at $(cat "$KAFKA_RUN_DIR/bootstrap"); run stop.sh first" >&2
    exit 1
fi

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Ports below Linux's ephemeral range (32768-60999 by default): restart.sh binds them again
# after a stop, and a port in that range can meanwhile be taken as the source port of some
# client's outgoing connection (seen: "Address already in use" for the controller port).
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    echo "start.sh: no free port found" >&2
    return 1
}

PORT="${KAFKA_PORT:-$(free_port)}"
if port_in_use "$PORT"; then
    echo "start.sh: port $PORT is already in use" >&2
    exit 1
fi
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$(free_port)}"
while [[ "$CONTROLLER_PORT" == "$PORT" ]]; do CONTROLLER_PORT="$(free_port)"; done
SASL_PORT="${KAFKA_SASL_PORT:-$(free_port)}"
while [[ "$SASL_PORT" == "$PORT" || "$SASL_PORT" == "$CONTROLLER_PORT" ]]; do SASL_PORT="$(free_port)"; done
SSL_PORT="${KAFKA_SSL_PORT:-$(free_port)}"
while [[ "$SSL_PORT" == "$PORT" || "$SSL_PORT" == "$CONTROLLER_PORT" || "$SSL_PORT" == "$SASL_PORT" ]]; do SSL_PORT="$(free_port)"; done
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$(free_port)}"
while [[ " $PORT $CONTROLLER_PORT $SASL_PORT $SSL_PORT " == *" $SASL_SSL_PORT "* ]]; do SASL_SSL_PORT="$(free_port)"; done
SASL_USERNAME="${KAFKA_SASL_USERNAME:-flowstage}"
SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-flowstage-secret}"
if [[ ! "$SASL_USERNAME$SASL_PASSWORD" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "start.sh: KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD: letters, digits, . _ - only" >&2
    exit 1
fi

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/flowstage-kafka.XXXXXX")"
mkdir -p "$KAFKA_RUN_DIR" "$WORKDIR/data"
CONFIG="$WORKDIR/server.properties"

# A throwaway CA and the broker's certificate (valid for 127.0.0.1 and localhost, 30 days),
# in $WORKDIR/tls; sets SSL_PROPS, the SSL listener's keystore settings (the SASL_SSL listener
# uses the same keystore).
make_certificates() {
    local tls="$WORKDIR/tls" log="$WORKDIR/tls/certificates.log"
    mkdir -p "$tls"
    if command -v openssl >/dev/null; then
        cat >"$tls/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = flowstage throwaway test CA
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[broker_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
CNF
        {
            openssl req -x509 -new -config "$tls/openssl.cnf" -extensions ca_ext \
                -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 30 \
                -subj "/CN=flowstage throwaway test CA" &&
            openssl req -new -config "$tls/openssl.cnf" \
                -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$tls/broker.key" -out "$tls/broker.csr" -subj "/CN=127.0.0.1" &&
            openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
                -set_serial "0x$(openssl rand -hex 8)" -days 30 \
                -extfile "$tls/openssl.cnf" -extensions broker_ext -out "$tls/broker.crt"
        } >"$log" 2>&1 || return 1
        # A PEM keystore: the unencrypted PKCS#8 key and the certificate chain in one file.
        cat "$tls/broker.key" "$tls/broker.crt" "$tls/ca.pem" >"$tls/broker-keystore.pem"
        SSL_PROPS="listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$tls/broker-keystore.pem"
    else
        local keytool="${JAVA%java}keytool" pass
        [[ "$JAVA" == */* ]] || keytool=keytool
        pass="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
        {
            "$keytool" -genkeypair -alias ca -keyalg EC -groupname secp256r1 \
                -dname "CN=flowstage throwaway test CA" -ext bc:c=ca:true -validity 30 \
                -keystore "$tls/ca.p12" -storetype PKCS12 -storepass "$pass" &&
            "$keytool" -exportcert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$pass" \
                -file "$tls/ca.pem" &&
            "$keytool" -genkeypair -alias broker -keyalg EC -groupname secp256r1 \
                -dname "CN=127.0.0.1" -validity 30 \
                -keystore "$tls/broker.p12" -storetype PKCS12 -storepass "$pass" &&
            "$keytool" -certreq -alias broker -keystore "$tls/broker.p12" -storepass "$pass" \
                -file "$tls/broker.csr" &&
            "$keytool" -gencert -alias ca -keystore "$tls/ca.p12" -storepass "$pass" -rfc \
                -infile "$tls/broker.csr" -outfile "$tls/broker.crt" -validity 30 \
                -ext san=ip:127.0.0.1,dns:localhost -ext eku=serverAuth &&
            "$keytool" -importcert -noprompt -alias ca -file "$tls/ca.pem" \
                -keystore "$tls/broker.p12" -storepass "$pass" &&
            "$keytool" -importcert -alias broker -file "$tls/broker.crt" \
                -keystore "$tls/broker.p12" -storepass "$pass"
        } >"$log" 2>&1 || return 1
        SSL_PROPS="listener.name.ssl.ssl.keystore.type=PKCS12
listener.name.ssl.ssl.keystore.location=$tls/broker.p12
listener.name.ssl.ssl.keystore.password=$pass
listener.name.ssl.ssl.key.password=$pass"
    fi
}
make_certificates || {
    echo "start.sh: making the test certificates failed:" >&2
    cat "$WORKDIR/tls/certificates.log" >&2
    exit 1
}

cat >"$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
$SSL_PROPS
listener.name.ssl.ssl.client.auth=none
${SSL_PROPS//listener.name.ssl./listener.name.sasl_ssl.}
listener.name.sasl_ssl.ssl.client.auth=none
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USERNAME="$SASL_PASSWORD";
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$WORKDIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
# Extra broker properties, one `key=value` per line (later lines win).
if [[ -n "${KAFKA_SERVER_PROPERTIES:-}" ]]; then
    printf '%s\n' "$KAFKA_SERVER_PROPERTIES" >>"$CONFIG"
fi

CLUSTER_ID="$(kafka_tool kafka.tools.StorageTool random-uuid)"
# The SCRAM user of the SASL_SSL listener goes into the metadata log when it is formatted.
kafka_tool kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$CONFIG" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USERNAME,password=$SASL_PASSWORD]" \
    >"$WORKDIR/format.log" 2>&1 || {
    echo "start.sh: formatting KRaft storage failed:" >&2
    cat "$WORKDIR/format.log" >&2
    exit 1
}

launch_broker "$CONFIG" "$WORKDIR" "127.0.0.1:$PORT" start.sh
echo "127.0.0.1:$SASL_PORT" >"$KAFKA_RUN_DIR/sasl-bootstrap"
echo "127.0.0.1:$SSL_PORT" >"$KAFKA_RUN_DIR/ssl-bootstrap"
echo "127.0.0.1:$SASL_SSL_PORT" >"$KAFKA_RUN_DIR/sasl-ssl-bootstrap"
cp "$WORKDIR/tls/ca.pem" "$KAFKA_RUN_DIR/ca.pem"
echo "127.0.0.1:$PORT"
