{{/* The release's name prefix for every object (at most 40 characters, so "-kube-aad-proxy" still fits). */}}
{{- define "cca.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "cca.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* cca.image: the image of one binary. Call with (dict "root" $ "name" "clusteragent"). */}}
{{- define "cca.image" -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .name (include "cca.tag" .root) -}}
{{- end -}}

{{/* cca.labels: the labels of a role's objects. Call with (dict "root" $ "role" "connect"). */}}
{{- define "cca.selectorLabels" -}}
app.kubernetes.io/name: clusterconnect-agent
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "cca.labels" -}}
{{ include "cca.selectorLabels" . }}
app.kubernetes.io/part-of: clusterconnect-agent
app.kubernetes.io/version: {{ include "cca.tag" .root | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
clusterconnect.io/cluster: {{ .root.Values.cluster.name | quote }}
{{- end -}}

{{/* The chart-wide labels of objects that belong to no single role. */}}
{{- define "cca.commonLabels" -}}
app.kubernetes.io/name: clusterconnect-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: clusterconnect-agent
app.kubernetes.io/version: {{ include "cca.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cca.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cca.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Scheduling and pod metadata shared by every role. Call with $. */}}
{{- define "cca.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext: {{- include "cca.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/* The env of every role that dials out: its namespace and the proxy settings. */}}
{{- define "cca.env" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.proxy.httpsProxy }}
- name: HTTPS_PROXY
  value: {{ . | quote }}
- name: NO_PROXY
  value: {{ include "cca.noProxy" $ | quote }}
{{- end }}
{{- if .Values.proxy.caBundle }}
- name: SSL_CERT_DIR
  value: /etc/clusterconnect/proxy-ca
{{- end }}
{{- end -}}

{{- define "cca.noProxy" -}}
{{- $base := list "$(KUBERNETES_SERVICE_HOST)" "kubernetes.default" "kubernetes.default.svc" ".svc" ".cluster.local" "127.0.0.1" "localhost" -}}
{{- with .Values.proxy.noProxy }}{{ $base = append $base . }}{{ end -}}
{{- join "," $base -}}
{{- end -}}

{{/* Volumes every role may mount: relay CA, proxy CA. */}}
{{- define "cca.caVolumes" -}}
{{- if .Values.relay.caBundle }}
- name: relay-ca
  configMap:
    name: {{ include "cca.fullname" . }}-relay-ca
{{- end }}
{{- if .Values.proxy.caBundle }}
- name: proxy-ca
  configMap:
    name: {{ include "cca.fullname" . }}-proxy-ca
{{- end }}
{{- end -}}

{{- define "cca.caMounts" -}}
{{- if .Values.relay.caBundle }}
- name: relay-ca
  mountPath: /etc/clusterconnect/relay-ca
  readOnly: true
{{- end }}
{{- if .Values.proxy.caBundle }}
- name: proxy-ca
  mountPath: /etc/clusterconnect/proxy-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The flags every clusteragent role takes. */}}
{{- define "cca.agentArgs" -}}
- --relay-url={{ required "relay.url is required: the relay's https:// URL" .Values.relay.url }}
- --cluster={{ required "cluster.name is required: the cluster's registered name" .Values.cluster.name }}
- --listen=:8080
- --log-level={{ .Values.logLevel }}
{{- if .Values.relay.caBundle }}
- --relay-ca-file=/etc/clusterconnect/relay-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "cca.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "cca.identityVolume" -}}
- name: identity
  secret:
    secretName: {{ .Values.identitySecretName }}
    optional: true
    defaultMode: 0440
{{- end -}}

{{- define "cca.identityMount" -}}
- name: identity
  mountPath: /var/run/clusterconnect/identity
  readOnly: true
{{- end -}}

{{/* The kube-aad-proxy and guard Service names. */}}
{{- define "cca.aadProxyHost" -}}
{{- printf "%s-kube-aad-proxy.%s.svc" (include "cca.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- define "cca.guardHost" -}}
{{- printf "%s-guard.%s.svc" (include "cca.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Entra verification flags shared by kube-aad-proxy and guard. */}}
{{- define "cca.entraArgs" -}}
{{- range .Values.entra.tenants }}
- --tenant={{ . }}
{{- end }}
{{- range .Values.entra.audiences }}
- --audience={{ . }}
{{- end }}
{{- with .Values.entra.issuerURL }}
- --issuer-url={{ . }}
{{- end }}
{{- if .Values.entra.issuerCABundle }}
- --issuer-ca-file=/etc/clusterconnect/issuer-ca/ca.crt
{{- end }}
{{- end -}}

{{/*
cca.servingTLS: the data of a serving certificate Secret (tls.crt, tls.key, ca.crt) for host, kept
across upgrades: an existing Secret's certificate is reused while it is there, else a CA and a
certificate valid for ten years are made. Call with (dict "root" $ "secret" name "host" host), and
"ip" for an IP address SAN besides.
*/}}
{{- define "cca.servingTLS" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (index $existing.data "tls.crt") (index $existing.data "ca.crt") -}}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
ca.crt: {{ index $existing.data "ca.crt" }}
{{- else -}}
{{- $ca := genCA (printf "%s CA" .host) 3650 -}}
{{- $short := regexReplaceAll "\\.svc$" .host "" -}}
{{- $first := regexReplaceAll "\\..*$" .host "" -}}
{{- $ips := list -}}
{{- with .ip }}{{ $ips = list . }}{{ end -}}
{{- $cert := genSignedCert .host $ips (list .host $short $first (printf "%s.cluster.local" .host)) 3650 $ca -}}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
ca.crt: {{ $ca.Cert | b64enc }}
{{- end -}}
{{- end -}}
