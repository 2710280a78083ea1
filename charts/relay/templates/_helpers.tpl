{{/* Names, labels and the derived settings the templates share. */}}

{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "relay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: relay
app.kubernetes.io/part-of: clusterconnect
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The URL in issued kubeconfigs: config.externalURL, else the first ingress or
route host, else the Service's cluster DNS name.
*/}}
{{- define "relay.externalURL" -}}
{{- $hosts := list }}
{{- if .Values.ingress.enabled }}
{{- $hosts = concat $hosts .Values.ingress.hosts }}
{{- end }}
{{- if .Values.gateway.tlsRoute.enabled }}
{{- $hosts = concat $hosts .Values.gateway.tlsRoute.hostnames }}
{{- end }}
{{- $host := "" }}
{{- range $hosts }}
{{- if and (not $host) (not (hasPrefix "*." .)) }}
{{- $host = . }}
{{- end }}
{{- end }}
{{- if .Values.config.externalURL }}
{{- .Values.config.externalURL }}
{{- else if $host }}
{{- printf "https://%s" $host }}
{{- else if eq (int .Values.service.port) 443 }}
{{- printf "https://%s.%s.svc" (include "relay.fullname" .) .Release.Namespace }}
{{- else }}
{{- printf "https://%s.%s.svc:%d" (include "relay.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* Where the pod mounts what. */}}
{{- define "relay.dataDir" -}}/var/lib/relay{{- end }}
{{- define "relay.tlsDir" -}}/etc/relay/tls{{- end }}
{{- define "relay.kekDir" -}}/etc/relay/kek{{- end }}
{{- define "relay.adminTokenDir" -}}/etc/relay/admin-token{{- end }}
{{- define "relay.clusterCADir" -}}/etc/relay/cluster-ca{{- end }}
{{- define "relay.etcdDir" -}}/etc/relay/etcd{{- end }}

{{/* Fails rendering on settings that cannot work, with what to do instead. */}}
{{- define "relay.validate" -}}
{{- $embedded := eq .Values.store.type "embedded" }}
{{- if and $embedded (gt (int .Values.replicas) 1) }}
{{- fail (printf "replicas is %d, but store.type embedded keeps the store in one bbolt file on one volume and allows only 1 replica: set replicas to 1, or use store.type etcd to run more" (int .Values.replicas)) }}
{{- end }}
{{- if not $embedded }}
{{- if not .Values.store.etcd.endpoints }}
{{- fail "store.type etcd needs store.etcd.endpoints (the etcd client URLs)" }}
{{- end }}
{{- if not .Values.store.etcd.clientSecretName }}
{{- fail "store.type etcd needs store.etcd.clientSecretName: a Secret with tls.crt, tls.key and ca.crt for the etcd client" }}
{{- end }}
{{- if or (not .Values.kek.secretName) (not .Values.tls.secretName) (not .Values.adminToken.secretName) }}
{{- fail "store.type etcd keeps the data dir in an emptyDir, lost on every restart and not shared between replicas: set kek.secretName, tls.secretName and adminToken.secretName so that every relay pod uses the same key-encryption key, serving certificate and admin token" }}
{{- end }}
{{- end }}
{{- if and .Values.persistence.existingClaim (not $embedded) }}
{{- fail "persistence.existingClaim is for store.type embedded; with etcd the data dir is an emptyDir" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: TLS passthrough routes by server name" }}
{{- end }}
{{- if and .Values.gateway.tlsRoute.enabled (not .Values.gateway.tlsRoute.parentRefs) }}
{{- fail "gateway.tlsRoute.enabled needs gateway.tlsRoute.parentRefs (a Gateway listener with TLS mode Passthrough)" }}
{{- end }}
{{- if and .Values.gateway.httpRoute.enabled (not .Values.gateway.httpRoute.parentRefs) }}
{{- fail "gateway.httpRoute.enabled needs gateway.httpRoute.parentRefs" }}
{{- end }}
{{- if or (and .Values.entra.tenants (not .Values.entra.audiences)) (and .Values.entra.audiences (not .Values.entra.tenants)) }}
{{- fail "entra.tenants and entra.audiences go together: give both to turn Entra sign-in on, neither to leave it off" }}
{{- end }}
{{- if eq (int .Values.service.port) (int .Values.service.healthPort) }}
{{- fail "service.port and service.healthPort must differ" }}
{{- end }}
{{- end }}

{{/*
The relay's command-line arguments as YAML list items, --flag=value each;
values from the user are quoted.
*/}}
{{- define "relay.args" -}}
{{- $c := .Values.config -}}
- --listen=:8443
- --health-listen=:8444
- --data-dir={{ include "relay.dataDir" . }}
- {{ printf "--external-url=%s" (include "relay.externalURL" .) | quote }}
{{- range $c.hostnames }}
- {{ printf "--hostname=%s" . | quote }}
{{- end }}
{{- if .Values.tls.secretName }}
- --tls-cert-file={{ include "relay.tlsDir" . }}/tls.crt
- --tls-key-file={{ include "relay.tlsDir" . }}/tls.key
{{- with .Values.tls.caKey }}
- --ca-file={{ include "relay.tlsDir" $ }}/{{ . }}
{{- end }}
{{- end }}
{{- if .Values.kek.secretName }}
- --kek-file={{ include "relay.kekDir" . }}/kek
{{- end }}
{{- if .Values.adminToken.secretName }}
- --admin-token-file={{ include "relay.adminTokenDir" . }}/{{ .Values.adminToken.key }}
{{- end }}
{{- if .Values.clusterCA.secretName }}
- --cluster-ca-cert-file={{ include "relay.clusterCADir" . }}/tls.crt
- --cluster-ca-key-file={{ include "relay.clusterCADir" . }}/tls.key
{{- end }}
{{- if eq .Values.store.type "etcd" }}
- --store=etcd
- {{ printf "--etcd-endpoints=%s" (join "," .Values.store.etcd.endpoints) | quote }}
- --etcd-cert={{ include "relay.etcdDir" . }}/tls.crt
- --etcd-key={{ include "relay.etcdDir" . }}/tls.key
- --etcd-ca={{ include "relay.etcdDir" . }}/ca.crt
{{- /* The other replicas forward requests for clusters whose tunnels are here to this pod's own address. */}}
- --peer-url=https://$(POD_IP):8443
- --replica-id=$(POD_NAME)
{{- end }}
{{- with .Values.entra.tenants }}
- {{ printf "--tenant=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.entra.audiences }}
- {{ printf "--audience=%s" (join "," .) | quote }}
{{- end }}
{{- /* Flags left out when their value is empty: the relay's default holds. */}}
{{- $strings := dict
  "audit-log" $c.auditLog
  "cert-lifetime" $c.certLifetime
  "client-cert-lifetime" $c.clientCertLifetime
  "cluster-host-suffix" $c.clusterHostSuffix
  "heartbeat-write-interval" $c.heartbeatWriteInterval
  "issuer-url" .Values.entra.issuerURL
  "limit-idle-after" .Values.limits.idleAfter
  "location" $c.location
  "log-format" $c.log.format
  "log-level" $c.log.level
  "offline-after" $c.offlineAfter
  "registration-token-ttl" $c.registrationTokenTTL
  "shutdown-timeout" $c.shutdownTimeout }}
{{- range $flag := keys $strings | sortAlpha }}
{{- with get $strings $flag }}
- {{ printf "--%s=%s" $flag . | quote }}
{{- end }}
{{- end }}
{{- /* Limits left out when null; rates are floats, the rest counts. */}}
{{- $rates := dict
  "limit-caller-rate" .Values.limits.callerRate
  "limit-cluster-rate" .Values.limits.clusterRate }}
{{- range $flag := keys $rates | sortAlpha }}
{{- $v := get $rates $flag }}
{{- if not (kindIs "invalid" $v) }}
- {{ printf "--%s=%v" $flag (float64 $v) | quote }}
{{- end }}
{{- end }}
{{- $counts := dict
  "limit-caller-burst" .Values.limits.callerBurst
  "limit-caller-concurrent" .Values.limits.callerConcurrent
  "limit-caller-long-running" .Values.limits.callerLongRunning
  "limit-cluster-burst" .Values.limits.clusterBurst
  "limit-cluster-concurrent" .Values.limits.clusterConcurrent
  "limit-cluster-long-running" .Values.limits.clusterLongRunning }}
{{- range $flag := keys $counts | sortAlpha }}
{{- $v := get $counts $flag }}
{{- if not (kindIs "invalid" $v) }}
- {{ printf "--%s=%d" $flag (int64 $v) | quote }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
