{{/* The chart's name. */}}
{{- define "csoc-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name. */}}
{{- define "csoc-agent.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "csoc-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "csoc-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: csoc-watch
{{- end }}

{{/* Selector labels (and the pods' `app`, which gen3-helm's NetworkPolicies match). */}}
{{- define "csoc-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csoc-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "csoc-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "csoc-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the cluster-scoped objects: unique per namespace and release. */}}
{{- define "csoc-agent.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "csoc-agent.fullname" .) }}
{{- end }}

{{/* The agent's name at the collector. */}}
{{- define "csoc-agent.agentName" -}}
{{- default .Release.Name .Values.agentName }}
{{- end }}

{{/* The image. */}}
{{- define "csoc-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the token. */}}
{{- define "csoc-agent.tokenSecretName" -}}
{{- if .Values.token.externalSecret.enabled }}
{{- printf "%s-token" (include "csoc-agent.fullname" .) }}
{{- else }}
{{- required "token.existingSecret is required (a Secret holding the agent's token), or enable token.externalSecret" .Values.token.existingSecret }}
{{- end }}
{{- end }}

{{/* Where the token file is mounted. */}}
{{- define "csoc-agent.tokenDir" -}}/var/run/secrets/csoc-agent/token{{- end }}
{{/* Where the TLS files are mounted. */}}
{{- define "csoc-agent.tlsDir" -}}/var/run/secrets/csoc-agent/tls{{- end }}

{{/*
Checks of the values that no template would otherwise catch: fails the
render with a message naming the value.
*/}}
{{- define "csoc-agent.validate" -}}
{{- $addr := .Values.collector.address | toString }}
{{- if not (regexMatch "^https?://[^/]+" $addr) }}
{{- fail (printf "collector.address %q must be an http:// or https:// URL, e.g. http://csoc-collector-grpc.csoc.svc.cluster.local:9301" $addr) }}
{{- end }}
{{- if and .Values.collector.tls.existingSecret (not (hasPrefix "https://" $addr)) }}
{{- fail "collector.tls.existingSecret is set but collector.address is not https://" }}
{{- end }}
{{- if and .Values.collector.tls.clientCert (not .Values.collector.tls.existingSecret) }}
{{- fail "collector.tls.clientCert needs collector.tls.existingSecret (the Secret with the client certificate and key)" }}
{{- end }}
{{- if hasKey .Values.config "token" }}
{{- fail "config.token: the token never goes in the config; use token.existingSecret or token.externalSecret" }}
{{- end }}
{{- if hasKey .Values.config "token_file" }}
{{- fail "config.token_file: the chart mounts the token from token.existingSecret or token.externalSecret" }}
{{- end }}
{{- if hasKey .Values.externalLabels "commons" }}
{{- fail "externalLabels.commons: the collector sets commons from the agent's token" }}
{{- end }}
{{- if .Values.token.externalSecret.enabled }}
{{- if not .Values.token.externalSecret.secretStoreRef.name }}
{{- fail "token.externalSecret.secretStoreRef.name is required when token.externalSecret.enabled" }}
{{- end }}
{{- if not .Values.token.externalSecret.remoteKey }}
{{- fail "token.externalSecret.remoteKey is required when token.externalSecret.enabled" }}
{{- end }}
{{- end }}
{{- if not .Values.token.key }}
{{- fail "token.key must name the Secret's key holding the token" }}
{{- end }}
{{- end }}

{{/* Container securityContext: OpenShift restricted / PSS restricted. */}}
{{- define "csoc-agent.containerSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod securityContext. */}}
{{- define "csoc-agent.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Connection settings shared by both agents' configs. */}}
{{- define "csoc-agent.connection" -}}
collector: {{ .Values.collector.address | quote }}
token_file: {{ printf "%s/token" (include "csoc-agent.tokenDir" .) }}
{{- with .Values.commonsName }}
commons_name: {{ . | quote }}
{{- end }}
interval: {{ .Values.interval | quote }}
http_listen: {{ printf "0.0.0.0:%d" (int .Values.http.port) | quote }}
spool_dir: /var/lib/csoc-agent/spool
spool_max_bytes: {{ .Values.spool.maxBytes | quote }}
log_format: {{ .Values.logFormat }}
{{- $labels := deepCopy .Values.externalLabels }}
{{- with .Values.global.environment }}
{{- $_ := set $labels "environment" . }}
{{- end }}
external_labels: {{ toYaml $labels | nindent 2 }}
{{- if .Values.collector.tls.existingSecret }}
tls:
  {{- with .Values.collector.tls.caKey }}
  ca_file: {{ printf "%s/%s" (include "csoc-agent.tlsDir" $) . }}
  {{- end }}
  {{- if .Values.collector.tls.clientCert }}
  cert_file: {{ printf "%s/%s" (include "csoc-agent.tlsDir" .) .Values.collector.tls.certKey }}
  key_file: {{ printf "%s/%s" (include "csoc-agent.tlsDir" .) .Values.collector.tls.keyKey }}
  {{- end }}
  {{- with .Values.collector.tls.serverName }}
  server_name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The Deployment agent's config file, before .Values.config is merged. */}}
{{- define "csoc-agent.config" -}}
{{- $ns := .Release.Namespace }}
{{ include "csoc-agent.connection" . }}
sources:
  host:
    enabled: {{ .Values.sources.host.enabled }}
  kubernetes:
    enabled: {{ .Values.sources.kubernetes.enabled }}
    namespaces:
      - {{ $ns }}
    {{- if or (not .Values.rbac.clusterRole.enabled) (not .Values.sources.argocd.enabled) }}
    disable:
      {{- if not .Values.rbac.clusterRole.enabled }}
      # Without the ClusterRole: nodes and the metrics API are not readable.
      - nodes
      - metrics
      {{- end }}
      {{- if not .Values.sources.argocd.enabled }}
      # Argo CD Applications: off unless sources.argocd.enabled.
      - applications
      {{- end }}
    {{- end }}
    {{- if .Values.sources.argocd.enabled }}
    argocd:
      namespaces:
        - {{ .Values.sources.argocd.namespace }}
    {{- end }}
  gen3_status:
    enabled: {{ .Values.sources.gen3Status.enabled }}
    {{- if .Values.sources.gen3Status.enabled }}
    namespace: {{ $ns }}
    {{- $host := .Values.global.hostname | default "" }}
    {{- if and $host (ne $host "localhost") }}
    base_url: {{ printf "https://%s" $host | quote }}
    {{- end }}
    {{- end }}
  revproxy_log:
    enabled: {{ .Values.sources.revproxyLog.enabled }}
    {{- if .Values.sources.revproxyLog.enabled }}
    kubernetes:
      namespace: {{ $ns }}
      selector: {{ .Values.sources.revproxyLog.selector | quote }}
    {{- end }}
  scrape:
    {{- if not (or .Values.sources.scrapeAnnotatedPods.enabled .Values.sources.argoWorkflows.enabled) }}
    jobs: []
    {{- else }}
    jobs:
    {{- end }}
    {{- if .Values.sources.scrapeAnnotatedPods.enabled }}
      - job_name: gen3-pods
        kubernetes_sd_configs:
          - role: pod
            namespaces:
              names:
                - {{ $ns }}
        relabel_configs:
          - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
            action: keep
            regex: "true"
          - source_labels: [__meta_kubernetes_pod_phase]
            action: drop
            regex: Pending|Succeeded|Failed
          - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
            action: replace
            regex: (https?)
            target_label: __scheme__
          - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
            action: replace
            regex: (.+)
            target_label: __metrics_path__
          - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
            action: replace
            regex: '([^:]+)(?::\d+)?;(\d+)'
            replacement: $1:$2
            target_label: __address__
          - source_labels: [__meta_kubernetes_namespace]
            target_label: namespace
          - source_labels: [__meta_kubernetes_pod_name]
            target_label: pod
          - source_labels: [__meta_kubernetes_pod_label_app]
            target_label: service
    {{- end }}
    {{- if .Values.sources.argoWorkflows.enabled }}
      # Argo Workflows' controller metrics (port 9090) through pod discovery.
      - job_name: argo-workflows
        kubernetes_sd_configs:
          - role: pod
            namespaces:
              names:
                - {{ .Values.sources.argoWorkflows.namespace }}
            selectors:
              - role: pod
                label: app=workflow-controller
                field: status.phase=Running
        relabel_configs:
          - source_labels: [__meta_kubernetes_pod_container_port_number]
            action: keep
            regex: "9090"
          - source_labels: [__meta_kubernetes_namespace]
            target_label: namespace
          - source_labels: [__meta_kubernetes_pod_name]
            target_label: pod
    {{- end }}
{{- end }}

{{/* The node agents' config file (DaemonSet): the host source only. */}}
{{- define "csoc-agent.nodeConfig" -}}
{{ include "csoc-agent.connection" . }}
sources:
  host:
    enabled: true
    mount_points_exclude: {{ .Values.daemonset.mountPointsExclude | quote }}
{{- end }}

{{/* Volume mounts of the token and TLS files, the spool and /tmp. */}}
{{- define "csoc-agent.secretMounts" -}}
- name: token
  mountPath: {{ include "csoc-agent.tokenDir" . }}
  readOnly: true
{{- if .Values.collector.tls.existingSecret }}
- name: tls
  mountPath: {{ include "csoc-agent.tlsDir" . }}
  readOnly: true
{{- end }}
- name: spool
  mountPath: /var/lib/csoc-agent
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Volumes of the token and TLS Secrets and /tmp. */}}
{{- define "csoc-agent.secretVolumes" -}}
- name: token
  secret:
    secretName: {{ include "csoc-agent.tokenSecretName" . }}
    defaultMode: 0444
    items:
      - key: {{ .Values.token.key }}
        path: token
{{- if .Values.collector.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.collector.tls.existingSecret }}
    defaultMode: 0444
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* The HTTP port and the probes. */}}
{{- define "csoc-agent.portAndProbes" -}}
ports:
  - name: http
    containerPort: {{ .Values.http.port }}
    protocol: TCP
livenessProbe:
  httpGet:
    path: /-/healthy
    port: http
  periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
  failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
  timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /-/ready
    port: http
  periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
  failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
  timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
{{- end }}
