#!/usr/bin/env bash
# make demo / make demo-down: the whole chain on loopback, in the background.
#   etcd + kube-apiserver (real, built from the Go module proxy)
#   relay  <-- tunnels --  clusteragent  --> kube-aad-proxy --> kube-apiserver
#   devaad: a local stand-in for Entra ID (OIDC issuer, device-code login, Graph)
# a test-kubelet node with a Running Pod (exec, logs -f, port-forward), and a
# relay-issued kubeconfig for kubectl. Every command printed at the end names
# its files by absolute path (connectctl with --config), so it works pasted
# into any shell.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.demo"
bin="$root/bin"
relay_port="${DEMO_RELAY_PORT:-18443}"
relay_url="https://127.0.0.1:$relay_port"
cluster_name=demo
aad_proxy_port="${DEMO_AAD_PROXY_PORT:-18444}"
aad_health_port="${DEMO_AAD_HEALTH_PORT:-18445}"
aad_issuer_port="${DEMO_AAD_ISSUER_PORT:-18446}"
guard_port="${DEMO_GUARD_PORT:-18447}"
guard_health_port="${DEMO_GUARD_HEALTH_PORT:-18448}"
aad_audience="api://clusterconnect-demo"
pod_port="${DEMO_POD_PORT:-18449}"         # the demo Pod's HTTP page (the test kubelet forwards to 127.0.0.1:<port>)
forward_port="${DEMO_FORWARD_PORT:-18450}" # the local end of the printed kubectl port-forward
relay_health_port="${DEMO_RELAY_HEALTH_PORT:-18451}" # the relay's /readyz and /metrics (loopback only)
pod_log_every=3s                           # how often the demo Pod logs a line
# make demo RELAYS=3: a relay fleet — that many replicas sharing a three-member
# etcd cluster (TLS), behind a load balancer the agent dials.
relays="${RELAYS:-1}"
balancer_port="${DEMO_BALANCER_PORT:-18470}"
replica_port() { if [[ $1 == 1 ]]; then echo "$relay_port"; else echo $((18480 + $1)); fi; }
replica_health_port() { if [[ $1 == 1 ]]; then echo "$relay_health_port"; else echo $((18490 + $1)); fi; }
# connectctl's config for the demo relay: the demo's own file, never the
# user's ~/.config/connectctl/config.yaml. Every connectctl call names it.
cc_config="$state/connectctl.yaml"
cc=("$bin/connectctl" --config "$cc_config")
# The demo's Entra user signs in to the relay with its own connectctl config.
cce_config="$state/connectctl-entra.yaml"
cce=("$bin/connectctl" --config "$cce_config")

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
	stop_pid guard
	stop_pid relay
	for f in "$state"/relay-*.pid; do [[ -e $f ]] && stop_pid "$(basename "$f" .pid)"; done
	stop_pid devfleet
	stop_pid kube-aad-proxy
	stop_pid devaad
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
	echo "==> building relay, clusteragent, connectctl, kube-aad-proxy, guard"
	version="$(cd "$root" && git describe --tags --always --dirty 2>/dev/null || echo dev)"
	(cd "$root" && go build -ldflags "-X github.com/clusterconnect/clusterconnect/pkg/version.Version=$version" \
		-o "$bin/" ./cmd/relay ./cmd/clusteragent ./cmd/connectctl ./cmd/kube-aad-proxy ./cmd/guard ./hack/devcluster ./hack/devaad ./hack/devfleet)

	echo "==> starting a local Entra ID stand-in (OIDC issuer, device-code login, Graph)"
	mkdir -p "$state/aad"
	head -c 24 /dev/urandom | base64 >"$state/aad/graph-secret"
	start_bg devaad "$state/devaad.log" "$bin/devaad" --dir "$state/aad" --listen "127.0.0.1:$aad_issuer_port" \
		--graph-secret-file "$state/aad/graph-secret"
	wait_for "the local issuer" 30 test -f "$state/aad/aad.env"
	# shellcheck disable=SC1091
	source "$state/aad/aad.env"
	echo "==> guard's webhook configuration for the apiserver (TokenReview; Node, RBAC, then guard)"
	mkdir -p "$state/guard"
	mapfile -t guard_flags < <("$bin/guard" config --url "https://127.0.0.1:$guard_port" --ca-file "$GUARD_CA" \
		--out-dir "$state/guard" --failure-policy NoOpinion --unauthorized-ttl 5s | grep -o -- '--[a-z-]*=[^ ]*')
	apiserver_args=()
	for f in "${guard_flags[@]}"; do apiserver_args+=(--apiserver-arg "$f"); done

	echo "==> starting etcd, kube-apiserver and a test kubelet (node demo-node, with a Running Pod)"
	start_bg devcluster "$state/devcluster.log" "$bin/devcluster" --dir "$state/cluster" "${apiserver_args[@]}" \
		--pod-listen "127.0.0.1:$pod_port" --pod-log-every "$pod_log_every"
	wait_for "kube-apiserver" 120 test -f "$state/cluster/cluster.env"
	# shellcheck disable=SC1091
	source "$state/cluster/cluster.env"
	admin=(kubectl --kubeconfig "$ADMIN_KUBECONFIG")

	echo "==> starting kube-aad-proxy"

	# kube-aad-proxy's own identity: a service account that may only impersonate.
	"${admin[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-aad-proxy, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-aad-proxy-impersonator}
rules:
- {apiGroups: [""], resources: [users, groups], verbs: [impersonate]}
- {apiGroups: [authentication.k8s.io], resources: [userextras/oid, userextras/tid], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-aad-proxy-impersonator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-aad-proxy-impersonator}
subjects: [{kind: ServiceAccount, name: kube-aad-proxy, namespace: kube-system}]
YAML
	proxy_kc="$state/aad/proxy.kubeconfig"
	kubectl config --kubeconfig "$proxy_kc" set-cluster demo --server "$APISERVER_URL" --certificate-authority "$APISERVER_CA" --embed-certs >/dev/null
	kubectl config --kubeconfig "$proxy_kc" set-credentials kube-aad-proxy \
		--token "$("${admin[@]}" -n kube-system create token kube-aad-proxy --duration=24h)" >/dev/null
	kubectl config --kubeconfig "$proxy_kc" set-context demo --cluster demo --user kube-aad-proxy >/dev/null
	kubectl config --kubeconfig "$proxy_kc" use-context demo >/dev/null
	start_bg kube-aad-proxy "$state/kube-aad-proxy.log" "$bin/kube-aad-proxy" \
		--listen "127.0.0.1:$aad_proxy_port" --health-listen "127.0.0.1:$aad_health_port" \
		--tls-cert-file "$PROXY_CERT" --tls-key-file "$PROXY_KEY" --kubeconfig "$proxy_kc" \
		--issuer-url "$ISSUER_URL" --v1-issuer-url "$ISSUER_V1_URL" --issuer-ca-file "$ISSUER_CA" \
		--tenant "$TENANT" --audience "$aad_audience" \
		--graph-url "$GRAPH_URL" --client-id kube-aad-proxy --client-secret-file "$state/aad/graph-secret"
	wait_for "kube-aad-proxy" 30 grep -q "kube-aad-proxy listening" "$state/kube-aad-proxy.log"

	# The relay verifies Entra tokens itself (the same issuer, tenant and
	# audience as kube-aad-proxy) and records every request in its audit log.
	relay_args=(--issuer-url "$ISSUER_URL" --v1-issuer-url "$ISSUER_V1_URL" --issuer-ca-file "$ISSUER_CA"
		--tenant "$TENANT" --audience "$aad_audience")
	agent_relay_url="$relay_url"
	if ((relays > 1)); then
		echo "==> starting a three-member etcd cluster (TLS) and a load balancer in front of $relays relay replicas"
		backends=()
		for i in $(seq 1 "$relays"); do backends+=("127.0.0.1:$(replica_port "$i")"); done
		start_bg devfleet "$state/devfleet.log" "$bin/devfleet" --dir "$state/etcd" --members 3 \
			--balancer-listen "127.0.0.1:$balancer_port" --relays "$(IFS=,; echo "${backends[*]}")"
		wait_for "etcd" 120 test -f "$state/etcd/fleet.env"
		# shellcheck disable=SC1091
		source "$state/etcd/fleet.env"
		agent_relay_url="$BALANCER_URL"
		for i in $(seq 1 "$relays"); do
			port="$(replica_port "$i")"
			dir="$state/relay"
			[[ $i == 1 ]] || dir="$state/relay-$i"
			if [[ $i != 1 ]]; then
				# The replicas share the first one's CA, serving certificate, admin token and
				# key-encryption key, as a Deployment's pods share Secrets.
				mkdir -p "$dir"
				for f in ca.crt ca.key serving.crt serving.key admin-token kek; do cp "$state/relay/$f" "$dir/"; done
			fi
			echo "==> starting relay replica $i on https://127.0.0.1:$port"
			start_bg "relay-$i" "$state/relay-$i.log" "$bin/relay" --listen "127.0.0.1:$port" \
				--health-listen "127.0.0.1:$(replica_health_port "$i")" --data-dir "$dir" \
				--external-url "https://127.0.0.1:$port" --audit-log "$state/relay-audit-$i.log" "${relay_args[@]}" \
				--store etcd --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-ca "$ETCD_CA" --etcd-cert "$ETCD_CERT" --etcd-key "$ETCD_KEY" \
				--peer-url "https://127.0.0.1:$port" --replica-id "relay-$i"
			wait_for "relay replica $i" 30 curl -sf "http://127.0.0.1:$(replica_health_port "$i")/readyz" -o /dev/null
		done
	else
		echo "==> starting the relay on $relay_url"
		start_bg relay "$state/relay.log" "$bin/relay" --listen "127.0.0.1:$relay_port" \
			--health-listen "127.0.0.1:$relay_health_port" \
			--data-dir "$state/relay" --external-url "$relay_url" --audit-log "$state/relay-audit.log" "${relay_args[@]}"
	fi
	wait_for "relay" 30 test -f "$state/relay/admin-token"
	wait_for "relay" 30 "${cc[@]}" login --relay "$relay_url" --ca-file "$state/relay/ca.crt" --token-file "$state/relay/admin-token"

	echo "==> registering cluster '$cluster_name' (one-time registration token)"
	"${cc[@]}" clusters create "$cluster_name" --token-file "$state/registration.token" >/dev/null

	echo "==> starting the clusterconnect agent: it enrols (key made locally, certificate from the relay,"
	echo "    kept in Secret clusterconnect/clusterconnect-identity) and opens 2 tunnels with mTLS"
	"${admin[@]}" create namespace clusterconnect >/dev/null
	start_bg clusteragent "$state/clusteragent.log" "$bin/clusteragent" --relay-url "$agent_relay_url" \
		--cluster "$cluster_name" --registration-token-file "$state/registration.token" \
		--relay-ca-file "$state/relay/ca.crt" --namespace clusterconnect --kubeconfig "$ADMIN_KUBECONFIG" \
		--upstream "https://127.0.0.1:$aad_proxy_port" --upstream-ca-file "$PROXY_CA" --listen 127.0.0.1:0
	wait_for "agent heartbeat" 30 sh -c "'$bin/connectctl' --config '$cc_config' show '$cluster_name' -o json | grep -q '\"connectivityStatus\": \"Connected\"'"

	echo "==> starting guard with the cluster's identity (its Secret's tls.crt/tls.key, as a mounted Secret would give)"
	mkdir -p "$state/guard/identity"
	for k in tls.crt tls.key ca.crt; do
		"${admin[@]}" -n clusterconnect get secret clusterconnect-identity -o "jsonpath={.data.${k//./\\.}}" | base64 -d >"$state/guard/identity/$k"
	done
	start_bg guard "$state/guard.log" "$bin/guard" --listen "127.0.0.1:$guard_port" --health-listen "127.0.0.1:$guard_health_port" \
		--tls-cert-file "$GUARD_CERT" --tls-key-file "$GUARD_KEY" \
		--issuer-url "$ISSUER_URL" --v1-issuer-url "$ISSUER_V1_URL" --issuer-ca-file "$ISSUER_CA" \
		--tenant "$TENANT" --audience "$aad_audience" --relay-url "$relay_url" \
		--client-cert-file "$state/guard/identity/tls.crt" --client-key-file "$state/guard/identity/tls.key" \
		--relay-ca-file "$state/relay/ca.crt" --denied-ttl 5s \
		--webhook-client-ca-file "$state/guard/apiserver-client-ca.crt"
	wait_for "guard" 30 grep -q "guard listening" "$state/guard.log"
	echo "==> an Azure-RBAC-style assignment: the Entra demo user is Viewer of cluster '$cluster_name'"
	"${cc[@]}" role assign --assignee "$USER_OID" --role Viewer --cluster "$cluster_name" >/dev/null

	echo "==> a service-account token for the demo user (cluster-admin)"
	"${admin[@]}" -n kube-system create serviceaccount demo-admin >/dev/null
	"${admin[@]}" create clusterrolebinding demo-admin --clusterrole=cluster-admin --serviceaccount=kube-system:demo-admin >/dev/null
	token="$("${admin[@]}" -n kube-system create token demo-admin --duration=24h)"

	echo "==> token mode: the service-account token for the apiserver, and beside it a relay client certificate"
	echo "    (connectctl kube-credential, the kubeconfig's exec plugin, gets it with the demo's admin login)"
	"${cc[@]}" kubeconfig "$cluster_name" --token "$token" --file "$state/kubeconfig" >/dev/null

	echo "==> Entra mode: the demo user signs in to the relay with the device code (auto-approved by the local"
	echo "    issuer as dev@contoso.example); the relay admits it by its Viewer assignment, kube-aad-proxy"
	echo "    impersonates, guard authorizes"
	"${cce[@]}" login --relay "$relay_url" --ca-file "$state/relay/ca.crt" --entra \
		--issuer-url "$ISSUER_URL/$TENANT/v2.0" --client-id connectctl-demo --scope "$aad_audience/.default" \
		--issuer-ca-file "$ISSUER_CA" --cache-dir "$state/aad/token-cache" >/dev/null
	"${cce[@]}" kubeconfig "$cluster_name" --entra --file "$state/kubeconfig-entra" >/dev/null
	"${cc[@]}" list
	kc="$state/kubeconfig"
	fleet_msg=""
	if ((relays > 1)); then
		fleet_msg="
A relay fleet: $relays replicas sharing a three-member etcd cluster; the agent dials the load balancer
$agent_relay_url, and a replica without the cluster's tunnels forwards to one that has them (mTLS):
"
		for i in $(seq 1 "$relays"); do fleet_msg+="
relay-$i: https://127.0.0.1:$(replica_port "$i")"; done
		fleet_msg+="

The same kubeconfig works through any replica (only the server's host:port changed); kill one and the
others go on (the agent reconnects its tunnels through the load balancer within seconds):

  sed 's#https://127.0.0.1:$relay_port#https://127.0.0.1:$(replica_port 2)#' $kc > $state/kubeconfig-relay-2
  kubectl --kubeconfig $state/kubeconfig-relay-2 get ns
  kill -9 \$(cat $state/relay-1.pid); sleep 3; kubectl --kubeconfig $state/kubeconfig-relay-2 get ns
"
	fi
	cat <<MSG

The chain is up: kubectl -> relay ($relay_url) -> tunnel -> clusteragent -> kube-aad-proxy -> kube-apiserver.$fleet_msg
The relay admits nobody without a relay identity:

  curl -sk $relay_url/clusters/$cluster_name/version     # 401 from the relay, no stream opened

Token mode — relay-issued kubeconfig $state/kubeconfig: a cluster-admin service-account token for the
apiserver (kube-aad-proxy passes it through), plus a relay client certificate from connectctl kube-credential.
Try:

  kubectl --kubeconfig $kc get ns
  kubectl --kubeconfig $kc -n $POD_NAMESPACE get pods -o wide

The streaming half of the path, to Pod $POD_NAMESPACE/$POD_NAME on the test kubelet's node (it has no container
runtime: exec runs the command as a local process, the log gets a line every $pod_log_every and one per HTTP request,
and port-forward reaches a small HTTP page on port $POD_PORT):

  kubectl --kubeconfig $kc -n $POD_NAMESPACE exec $POD_NAME -- sh -c 'echo "hello from \$POD_NAMESPACE/\$POD_NAME"'
  echo 'stdin goes through too' | kubectl --kubeconfig $kc -n $POD_NAMESPACE exec -i $POD_NAME -- tr a-z A-Z
  kubectl --kubeconfig $kc -n $POD_NAMESPACE logs -f $POD_NAME   # Ctrl-C to stop
  kubectl --kubeconfig $kc -n $POD_NAMESPACE port-forward pod/$POD_NAME $forward_port:$POD_PORT   # then, in another shell:
  curl -s http://127.0.0.1:$forward_port/

The relay's side, with connectctl (the demo logged in to its own config file, $cc_config):

  $bin/connectctl --config $cc_config list
  $bin/connectctl --config $cc_config show $cluster_name
  $bin/connectctl --config $cc_config audit --cluster $cluster_name --since 10m   # who did what, through the relay
  $bin/connectctl --config $cc_config tokens create --name ci --role Reader --expires 24h --token-file $state/ci.token

Install the agent set into a cluster with the Helm SDK, as a user would (docs/install.md; no container runtime runs
here, so the Deployments exist but start no pod):

  $bin/connectctl --config $cc_config connect demo2 --kubeconfig $state/cluster/admin.kubeconfig --namespace demo2-agents
  kubectl --kubeconfig $state/cluster/admin.kubeconfig -n demo2-agents get deployments,serviceaccounts,networkpolicies
  $bin/connectctl --config $cc_config disconnect demo2 --kubeconfig $state/cluster/admin.kubeconfig --namespace demo2-agents

Entra mode — the same cluster as an Entra user, kubeconfig $state/kubeconfig-entra (connectctl get-token as exec
plugin; the relay verifies the token and admits the user by its role assignment; kube-aad-proxy impersonates; guard
authorizes from the relay's role assignments — the user is Viewer):

  kubectl --kubeconfig $state/kubeconfig-entra auth whoami
  kubectl --kubeconfig $state/kubeconfig-entra get pods -A          # allowed: Viewer reads pods
  kubectl --kubeconfig $state/kubeconfig-entra get secrets -A       # forbidden: Viewer does not read secrets
  $bin/connectctl --config $cc_config role assign --assignee $USER_OID --role Writer --cluster $cluster_name --expires 1h   # secrets work ~10 s later (caches), for an hour
  $bin/connectctl --config $cce_config whoami

Logs are in $state/*.log; stop everything with: make demo-down
MSG
}

case "${1:-up}" in
up) up ;;
down) down; echo "demo stopped" ;;
*) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
