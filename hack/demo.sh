#!/usr/bin/env bash
# make demo / make demo-down: the whole chain on loopback, in the background.
#   etcd + kube-apiserver (real, built from the Go module proxy)
#   relay  <-- tunnels --  clusteragent  --> kube-apiserver
# and a relay-issued kubeconfig for kubectl.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.demo"
bin="$root/bin"
relay_port="${DEMO_RELAY_PORT:-18443}"
relay_url="https://127.0.0.1:$relay_port"
cluster_name=demo

stop_pid() { # name
	local f="$state/$1.pid"
	[[ -f $f ]] || return 0
	local pid; pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	# Agent first, then the relay, then the apiserver (devcluster stops it
	# before etcd).
	stop_pid clusteragent
	stop_pid relay
	stop_pid devcluster
}

start_bg() { # name logfile cmd...
	local name="$1" log="$2"; shift 2
	setsid nohup "$@" >"$log" 2>&1 </dev/null &
	echo $! >"$state/$name.pid"
}

wait_for() { # what seconds cmd...
	local what="$1" secs="$2"; shift 2
	for _ in $(seq 1 $((secs * 10))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "demo: $what did not come up within ${secs}s; see the logs in $state" >&2
	exit 1
}

up() {
	down
	rm -rf "$state"
	mkdir -p "$state" "$bin"

	echo "==> building etcd and kube-apiserver if not cached (the first run builds kube-apiserver: about 4 min)"
	"$root/hack/tools.sh" >/dev/null
	echo "==> building relay, clusteragent, connectctl"
	version="$(cd "$root" && git describe --tags --always --dirty 2>/dev/null || echo dev)"
	(cd "$root" && go build -ldflags "-X github.com/clusterconnect/clusterconnect/pkg/version.Version=$version" \
		-o "$bin/" ./cmd/relay ./cmd/clusteragent ./cmd/connectctl ./hack/devcluster)

	echo "==> starting etcd and kube-apiserver"
	start_bg devcluster "$state/devcluster.log" "$bin/devcluster" --dir "$state/cluster"
	wait_for "kube-apiserver" 120 test -f "$state/cluster/cluster.env"
	# shellcheck disable=SC1091
	source "$state/cluster/cluster.env"
	admin=(kubectl --kubeconfig "$ADMIN_KUBECONFIG")

	echo "==> starting the relay on $relay_url"
	start_bg relay "$state/relay.log" "$bin/relay" --listen "127.0.0.1:$relay_port" \
		--data-dir "$state/relay" --external-url "$relay_url"
	wait_for "relay" 30 test -f "$state/relay/admin-token"
	export CONNECTCTL_CONFIG="$state/connectctl.yaml"
	wait_for "relay" 30 "$bin/connectctl" login --relay "$relay_url" --ca-file "$state/relay/ca.crt" --token-file "$state/relay/admin-token"

	echo "==> registering cluster '$cluster_name' (one-time registration token)"
	"$bin/connectctl" clusters create "$cluster_name" --token-file "$state/registration.token" >/dev/null

	echo "==> starting the clusterconnect agent: it enrols (key made locally, certificate from the relay,"
	echo "    kept in Secret clusterconnect/clusterconnect-identity) and opens 2 tunnels with mTLS"
	"${admin[@]}" create namespace clusterconnect >/dev/null
	start_bg clusteragent "$state/clusteragent.log" "$bin/clusteragent" --relay-url "$relay_url" \
		--cluster "$cluster_name" --registration-token-file "$state/registration.token" \
		--relay-ca-file "$state/relay/ca.crt" --namespace clusterconnect --kubeconfig "$ADMIN_KUBECONFIG" \
		--upstream "$APISERVER_URL" --upstream-ca-file "$APISERVER_CA" --listen 127.0.0.1:0
	wait_for "agent heartbeat" 30 sh -c "'$bin/connectctl' show '$cluster_name' -o json | grep -q '\"connectivityStatus\": \"Connected\"'"

	echo "==> a service-account token for the demo user (cluster-admin)"
	"${admin[@]}" -n kube-system create serviceaccount demo-admin >/dev/null
	"${admin[@]}" create clusterrolebinding demo-admin --clusterrole=cluster-admin --serviceaccount=kube-system:demo-admin >/dev/null
	token="$("${admin[@]}" -n kube-system create token demo-admin --duration=24h)"

	"$bin/connectctl" kubeconfig "$cluster_name" --token "$token" --file "$state/kubeconfig" >/dev/null
	"$bin/connectctl" list
	cat <<MSG

The chain is up: kubectl -> relay ($relay_url) -> tunnel -> clusteragent -> kube-apiserver.
Relay-issued kubeconfig: $state/kubeconfig
Try:

  kubectl --kubeconfig $state/kubeconfig get ns

Logs are in $state/*.log; stop everything with: make demo-down
MSG
}

case "${1:-up}" in
up) up ;;
down) down; echo "demo stopped" ;;
*) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
