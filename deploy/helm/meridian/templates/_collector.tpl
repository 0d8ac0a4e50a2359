{{/*
The pod template of a collector workload. Parameters (a dict): ctx, component, c (its
values), port, args (component flags), and optionally hostNetwork, podSecurityContext,
securityContext, ports, mounts and volumes (lists) for what differs.
*/}}
{{- define "meridian.collectorPod" -}}
{{- $ := .ctx }}
{{- $component := .component -}}
metadata:
  labels:
    {{- include "meridian.labels" (dict "ctx" $ "component" .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
    {{- with .c.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "meridian.serviceAccountName" $ }}
  automountServiceAccountToken: {{ include "meridian.automountToken" $ }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  securityContext:
    {{- toYaml (.podSecurityContext | default $.Values.podSecurityContext) | nindent 4 }}
  {{- with .c.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: meridian
      image: {{ include "meridian.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      workingDir: /var/lib/meridian
      args:
        - -target={{ .component }}
        - -server.listen-address=$(POD_IP):{{ .port }}
        {{- include "meridian.commonArgs" (dict "ctx" $ "collector" true) | nindent 8 }}
        {{- with .args }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with .c.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- include "meridian.commonEnv" $ | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ .port }}
          protocol: TCP
        {{- with .ports }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- include "meridian.probes" $ | nindent 6 }}
      resources:
        {{- toYaml .c.resources | nindent 8 }}
      securityContext:
        {{- toYaml (.securityContext | default $.Values.securityContext) | nindent 8 }}
      volumeMounts:
        {{- include "meridian.commonMounts" $ | nindent 8 }}
        # Spool and resume points: they survive a container restart, not a rescheduling
        # (the collectors' sources are re-read from where ClickHouse says they stopped).
        - name: data
          mountPath: /var/lib/meridian
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "meridian.commonVolumes" (dict "ctx" $ "collector" true) | nindent 4 }}
    - name: data
      emptyDir: {}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- include "meridian.topologySpread" (dict "ctx" $ "component" $component "constraints" .) | trim | nindent 4 }}
  {{- end }}
{{- end }}
