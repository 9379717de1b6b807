{{/* The chart's name. */}}
{{- define "csoc-collector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name. */}}
{{- define "csoc-collector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "csoc-collector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "csoc-collector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: csoc-watch
{{- end }}

{{/* Selector labels. */}}
{{- define "csoc-collector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csoc-collector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "csoc-collector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "csoc-collector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image. */}}
{{- define "csoc-collector.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A commons name as a DNS label, for object names. */}}
{{- define "csoc-collector.dnsLabel" -}}
{{- regexReplaceAll "[^a-z0-9-]" (lower .) "-" | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The server certificate's Secret (cert-manager's, or given). */}}
{{- define "csoc-collector.serverTlsSecret" -}}
{{- printf "%s-tls" (include "csoc-collector.fullname" .) }}
{{- end }}

{{/* The Secret of the agents' client CA, if any. */}}
{{- define "csoc-collector.clientCASecret" -}}
{{- if .Values.tls.grpc.clientCASecret }}
{{- .Values.tls.grpc.clientCASecret }}
{{- else if and .Values.tls.certManager.enabled .Values.tls.certManager.mtls.enabled }}
{{- printf "%s-agents-ca" (include "csoc-collector.fullname" .) }}
{{- end }}
{{- end }}

{{/* The fsGroup, if any. */}}
{{- define "csoc-collector.fsGroup" -}}
{{- $g := .Values.securityContext.fsGroup | toString }}
{{- if eq $g "auto" }}
{{- if not (.Capabilities.APIVersions.Has "security.openshift.io/v1") }}65532{{ end }}
{{- else if and $g (ne $g "<nil>") }}
{{- $g }}
{{- end }}
{{- end }}

{{/* Checks of the values: fails the render naming the value. */}}
{{- define "csoc-collector.validate" -}}
{{- range $i, $t := .Values.agentTokens }}
{{- if hasKey $t "token" }}
{{- fail (printf "agentTokens[%d].token: plain tokens are never rendered; give tokenSha256 (printf %%s TOKEN | sha256sum)" $i) }}
{{- end }}
{{- if not (regexMatch "^[A-Za-z0-9._-]{1,128}$" (toString $t.commons)) }}
{{- fail (printf "agentTokens[%d].commons %q must be 1-128 letters, digits, '-', '_' or '.'" $i (toString $t.commons)) }}
{{- end }}
{{- if not (regexMatch "^[0-9a-fA-F]{64}$" (toString $t.tokenSha256)) }}
{{- fail (printf "agentTokens[%d].tokenSha256 must be 64 hex digits (printf %%s TOKEN | sha256sum)" $i) }}
{{- end }}
{{- end }}
{{- range $i, $t := .Values.apiTokens }}
{{- if hasKey $t "token" }}
{{- fail (printf "apiTokens[%d].token: plain tokens are never rendered; give tokenSha256" $i) }}
{{- end }}
{{- if not $t.name }}
{{- fail (printf "apiTokens[%d].name is required" $i) }}
{{- end }}
{{- if not (has (toString $t.role) (list "read" "admin")) }}
{{- fail (printf "apiTokens[%d].role must be read or admin" $i) }}
{{- end }}
{{- if not (regexMatch "^[0-9a-fA-F]{64}$" (toString $t.tokenSha256)) }}
{{- fail (printf "apiTokens[%d].tokenSha256 must be 64 hex digits" $i) }}
{{- end }}
{{- end }}
{{- range $i, $t := .Values.config.agent_tokens }}
{{- if $t.token }}
{{- fail (printf "config.agent_tokens[%d].token: plain tokens are never rendered; use agentTokens with tokenSha256" $i) }}
{{- end }}
{{- end }}
{{- range $i, $t := .Values.config.api_tokens }}
{{- if $t.token }}
{{- fail (printf "config.api_tokens[%d].token: plain tokens are never rendered; use apiTokens with tokenSha256" $i) }}
{{- end }}
{{- end }}
{{- if not (has .Values.tls.grpc.clientAuth (list "optional" "require")) }}
{{- fail "tls.grpc.clientAuth must be optional or require" }}
{{- end }}
{{- if and (eq .Values.tls.grpc.clientAuth "require") (not (include "csoc-collector.clientCASecret" .)) }}
{{- fail "tls.grpc.clientAuth require needs a client CA: tls.grpc.clientCASecret or tls.certManager.mtls.enabled" }}
{{- end }}
{{- if and (include "csoc-collector.clientCASecret" .) (not .Values.tls.grpc.enabled) }}
{{- fail "agents' client certificates need tls.grpc.enabled" }}
{{- end }}
{{- if and .Values.tls.grpc.enabled (not .Values.tls.grpc.existingSecret) (not .Values.tls.certManager.enabled) }}
{{- fail "tls.grpc.enabled needs tls.grpc.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.http.enabled (not .Values.tls.http.existingSecret) (not .Values.tls.certManager.enabled) }}
{{- fail "tls.http.enabled needs tls.http.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name is required when tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.certManager.mtls.enabled (not .Values.tls.certManager.enabled) }}
{{- fail "tls.certManager.mtls.enabled needs tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.grpc.ingress.enabled (not .Values.grpc.ingress.host) }}
{{- fail "grpc.ingress.host is required when grpc.ingress.enabled" }}
{{- end }}
{{- if and .Values.http.ingress.enabled (not .Values.http.ingress.host) }}
{{- fail "http.ingress.host is required when http.ingress.enabled" }}
{{- end }}
{{- end }}

{{/* Where the pod's files are. */}}
{{- define "csoc-collector.tlsDir" -}}/etc/csoc-collector/tls{{- end }}

{{/* The collector's config file, before .Values.config is merged. */}}
{{- define "csoc-collector.config" -}}
{{- $tls := include "csoc-collector.tlsDir" . }}
data_dir: /var/lib/csoc-collector
http_listen: {{ printf "0.0.0.0:%d" (int .Values.http.port) | quote }}
grpc_listen: {{ printf "0.0.0.0:%d" (int .Values.grpc.port) | quote }}
retention: {{ .Values.retention | quote }}
{{- with .Values.retentionSize }}
retention_size: {{ . | quote }}
{{- end }}
log_format: {{ .Values.logFormat }}
{{- if .Values.externalUrl }}
external_url: {{ .Values.externalUrl | quote }}
{{- else if .Values.http.ingress.enabled }}
external_url: {{ printf "https://%s" .Values.http.ingress.host | quote }}
{{- end }}
agent_tokens:
{{- range .Values.agentTokens }}
  - commons: {{ .commons | quote }}
    token_sha256: {{ .tokenSha256 | lower | quote }}
{{- else }} []
{{- end }}
api_tokens:
{{- range .Values.apiTokens }}
  - name: {{ .name | quote }}
    role: {{ .role }}
    {{- with .commons }}
    commons: {{ . | quote }}
    {{- end }}
    token_sha256: {{ .tokenSha256 | lower | quote }}
{{- else }} []
{{- end }}
{{- $certs := list }}
{{- range .Values.agentCerts }}{{ $certs = append $certs (dict "commons" .commons "name" .name) }}{{ end }}
{{- if and .Values.tls.certManager.enabled .Values.tls.certManager.mtls.enabled }}
{{- range .Values.tls.certManager.mtls.agentCertificates }}{{ $certs = append $certs (dict "commons" .commons "name" .name) }}{{ end }}
{{- end }}
agent_certs: {{ toYaml $certs | nindent 2 }}
rule_files:
  - /etc/csoc-collector/rules/*.yml
alertmanagers: {{ toYaml .Values.alertmanagers | nindent 2 }}
receivers: {{ toYaml .Values.receivers | nindent 2 }}
{{- if .Values.tls.grpc.enabled }}
grpc_tls:
  cert_file: {{ $tls }}/grpc/tls.crt
  key_file: {{ $tls }}/grpc/tls.key
  {{- if include "csoc-collector.clientCASecret" . }}
  client_ca_file: {{ $tls }}/agents-ca/ca.crt
  {{- end }}
  client_auth: {{ .Values.tls.grpc.clientAuth }}
{{- end }}
{{- if .Values.tls.http.enabled }}
http_tls:
  cert_file: {{ $tls }}/http/tls.crt
  key_file: {{ $tls }}/http/tls.key
{{- end }}
{{- end }}
