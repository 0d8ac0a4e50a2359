{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meridian.fullname" -}}
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

{{/* Labels of every object; "component" is passed as (dict "ctx" $ "component" "core"). */}}
{{- define "meridian.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: meridian
{{ include "meridian.selectorLabels" . }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "meridian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "meridian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meridian.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* embedded or slim: the image variant in use. */}}
{{- define "meridian.variant" -}}
{{- .Values.image.variant | default (ternary "slim" "embedded" (ne .Values.clickhouse.dsn "")) }}
{{- end }}

{{- define "meridian.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if eq (include "meridian.variant" .) "slim" }}{{ $tag = printf "%s-slim" $tag }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Secrets a pod gets: name of the file under /etc/meridian/secrets => the flag reading it.
Collectors (collector=true) get only what they use: the API token their server requires
and the ClickHouse password.
*/}}
{{- define "meridian.secretFlags" -}}
apiToken: server.token-file
clickhousePassword: storage.clickhouse.password-file
{{- if not .collector }}
mapToken: topomap.token-file
clickhouseHTTPPassword: clickhouse-http.password-file
tsigKey: steering.rfc2136.key-secret-file
steeringAPIToken: steering.api-token-file
{{- end }}
{{- end }}

{{/* One projected volume holding every referenced Secret key as a file. */}}
{{- define "meridian.secretsVolume" -}}
{{- $ := .ctx -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
    {{- range $file, $flag := include "meridian.secretFlags" . | fromYaml }}
    {{- $ref := index $.Values.secrets $file }}
    {{- if $ref.name }}
      - secret:
          name: {{ $ref.name }}
          items:
            - key: {{ $ref.key }}
              path: {{ $file }}
    {{- end }}
    {{- end }}
{{- end }}

{{/* Flags every Meridian container gets (dict: ctx, collector). */}}
{{- define "meridian.commonArgs" -}}
{{- $ := .ctx -}}
- -config.file=/etc/meridian/config.yaml
- -log.level={{ $.Values.log.level }}
- -log.format={{ $.Values.log.format }}
{{- range $file, $flag := include "meridian.secretFlags" . | fromYaml }}
{{- if (index $.Values.secrets $file).name }}
- -{{ $flag }}=/etc/meridian/secrets/{{ $file }}
{{- end }}
{{- end }}
{{- with $.Values.clickhouse.dsn }}
- -storage.clickhouse.dsn={{ . }}
{{- end }}
{{- with $.Values.clickhouse.cluster }}
- -storage.clickhouse.cluster={{ . }}
{{- end }}
{{- end }}

{{- define "meridian.commonEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- end }}

{{/* Volumes and mounts every Meridian container gets: config, secrets, /tmp (dict: ctx, collector). */}}
{{- define "meridian.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "meridian.fullname" .ctx }}
{{ include "meridian.secretsVolume" . }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "meridian.commonMounts" -}}
- name: config
  mountPath: /etc/meridian/config.yaml
  subPath: config.yaml
  readOnly: true
- name: secrets
  mountPath: /etc/meridian/secrets
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "meridian.probes" -}}
startupProbe:
  {{- toYaml .Values.probes.startup | nindent 2 }}
livenessProbe:
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* Topology spread constraints, each given this component's selector when it has none. */}}
{{- define "meridian.topologySpread" -}}
{{- $sel := include "meridian.selectorLabels" . | fromYaml }}
{{- range .constraints }}
- {{ toYaml (merge (dict "labelSelector" (dict "matchLabels" $sel)) .) | indent 2 | trim }}
{{- end }}
{{- end }}

{{- define "meridian.validate" -}}
{{- if not .Values.secrets.apiToken.name }}
{{- fail "secrets.apiToken.name: Meridian's APIs need a token; create a Secret and name it here" }}
{{- end }}
{{- $collectors := or .Values.collectors.wireguard.enabled .Values.collectors.hubble.enabled .Values.collectors.ceph.enabled }}
{{- if and $collectors (not .Values.clickhouse.dsn) }}
{{- fail "collectors.*.enabled: collectors in their own pods write to a shared ClickHouse; set clickhouse.dsn (on the embedded engine the core runs every collector itself)" }}
{{- end }}
{{- if and .Values.collectors.hubble.enabled (not .Values.collectors.hubble.relays) }}
{{- fail "collectors.hubble.relays: list the Hubble Relay addresses (host:port)" }}
{{- end }}
{{- if and .Values.collectors.ceph.enabled (not .Values.collectors.ceph.mgrURLs) }}
{{- fail "collectors.ceph.mgrURLs: list the ceph-mgr prometheus module URLs" }}
{{- end }}
{{- if and .Values.kubernetes.inventory.enabled (not .Values.kubernetes.inventory.cluster) }}
{{- fail "kubernetes.inventory.cluster: name the inventory cluster this cluster's nodes belong to" }}
{{- end }}
{{- if and (not .Values.clickhouse.dsn) (gt (int .Values.core.replicas) 1) }}
{{- fail "core.replicas: the embedded engine allows one replica; set clickhouse.dsn to run more" }}
{{- end }}
{{- end }}

{{/* "true" when Meridian reads the Kubernetes API with the chart's ServiceAccount. */}}
{{- define "meridian.kubeAPI" -}}
{{- if or .Values.kubernetes.inventory.enabled .Values.ruler.kubernetes.enabled }}true{{ end }}
{{- end }}

{{/* The pods mount the ServiceAccount token only where the API is read. */}}
{{- define "meridian.automountToken" -}}
{{- or .Values.serviceAccount.automountServiceAccountToken (eq (include "meridian.kubeAPI" .) "true") }}
{{- end }}

{{/* The configuration file: .Values.config with what the kubernetes values add. */}}
{{- define "meridian.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- with .Values.kubernetes.inventory }}
{{- if .enabled }}
{{- $src := dict "cluster" .cluster "workloads" .workloads }}
{{- with .site }}{{ $_ := set $src "site" . }}{{ end }}
{{- $is := get $cfg "inventory_sources" | default dict }}
{{- $_ := set $is "kubernetes" (append (get $is "kubernetes" | default list) $src) }}
{{- $_ := set $cfg "inventory_sources" $is }}
{{- end }}
{{- end }}
{{- with .Values.ruler.kubernetes }}
{{- if .enabled }}
{{- $r := get $cfg "ruler" | default dict }}
{{- $_ := set $r "kubernetes" (dict "enabled" true "namespace" .namespace) }}
{{- $_ := set $cfg "ruler" $r }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
