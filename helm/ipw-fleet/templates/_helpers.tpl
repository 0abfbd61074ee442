{{/* Names, labels and the settings several templates share. */}}

{{- define "ipw-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; Kubernetes names are limited to 63 characters. */}}
{{- define "ipw-fleet.fullname" -}}
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

{{- define "ipw-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ipw-fleet.labels" -}}
helm.sh/chart: {{ include "ipw-fleet.chart" . }}
{{ include "ipw-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ipw-fleet
{{- end }}

{{- define "ipw-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipw-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "coordinator"). */}}
{{- define "ipw-fleet.componentLabels" -}}
{{ include "ipw-fleet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ipw-fleet.componentSelectorLabels" -}}
{{ include "ipw-fleet.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ipw-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ipw-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "image" .Values.x.image "ctx" $); the tag defaults to appVersion. */}}
{{- define "ipw-fleet.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "ipw-fleet.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "ipw-fleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ipw-fleet.agent.fullname" -}}
{{- printf "%s-agent" (include "ipw-fleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ipw-fleet.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "ipw-fleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The in-cluster gRPC URL, the default for both the advertised and the agents' URL. */}}
{{- define "ipw-fleet.coordinator.url" -}}
{{- printf "https://%s.%s.svc:%d" (include "ipw-fleet.coordinator.fullname" .) .Release.Namespace (int .Values.coordinator.grpcPort) }}
{{- end }}

{{/*
The database: fails the render unless exactly one of externalDatabase.url,
externalDatabase.existingSecret and postgresql.enabled is set. Returns the Secret and key
that hold the URL, as "name:key".
*/}}
{{- define "ipw-fleet.database.secretRef" -}}
{{- $db := .Values.externalDatabase }}
{{- $chosen := list }}
{{- if $db.url }}{{ $chosen = append $chosen "externalDatabase.url" }}{{ end }}
{{- if $db.existingSecret }}{{ $chosen = append $chosen "externalDatabase.existingSecret" }}{{ end }}
{{- if .Values.postgresql.enabled }}{{ $chosen = append $chosen "postgresql.enabled" }}{{ end }}
{{- if ne (len $chosen) 1 }}
{{- fail (printf "ipw-fleet: configure exactly one database: set externalDatabase.url, externalDatabase.existingSecret (with externalDatabase.existingSecretKey), or postgresql.enabled=true for a bundled PostgreSQL (found %s)" (ternary "none" (join ", " $chosen) (empty $chosen))) }}
{{- end }}
{{- if $db.existingSecret }}
{{- printf "%s:%s" $db.existingSecret $db.existingSecretKey }}
{{- else if $db.url }}
{{- printf "%s-database:database-url" (include "ipw-fleet.fullname" .) }}
{{- else }}
{{- printf "%s:database-url" (include "ipw-fleet.postgresql.secretName" .) }}
{{- end }}
{{- end }}

{{- define "ipw-fleet.postgresql.secretName" -}}
{{- default (include "ipw-fleet.postgresql.fullname" .) .Values.postgresql.auth.existingSecret }}
{{- end }}

{{/* The Secret holding ca.pem and ca.key; fails the render when none is given. */}}
{{- define "ipw-fleet.tls.secretName" -}}
{{- $tls := .Values.coordinator.tls }}
{{- if $tls.existingSecret }}
{{- $tls.existingSecret }}
{{- else if and $tls.caCert $tls.caKey }}
{{- printf "%s-ca" (include "ipw-fleet.fullname" .) }}
{{- else }}
{{- fail "ipw-fleet: the coordinators need the fleet's CA, shared by every replica. Create a Secret from a coordinator's DATA_DIR/tls (kubectl create secret generic ipw-fleet-ca --from-file=ca.pem --from-file=ca.key) and set coordinator.tls.existingSecret=ipw-fleet-ca, or pass the files with --set-file coordinator.tls.caCert=ca.pem --set-file coordinator.tls.caKey=ca.key" }}
{{- end }}
{{- end }}

{{- define "ipw-fleet.adminToken.secretName" -}}
{{- default (printf "%s-admin-token" (include "ipw-fleet.fullname" .)) .Values.coordinator.adminToken.existingSecret }}
{{- end }}

{{/* The key inside the admin-token Secret (the chart's own uses `admin-token`). */}}
{{- define "ipw-fleet.adminToken.key" -}}
{{- if .Values.coordinator.adminToken.existingSecret }}{{ .Values.coordinator.adminToken.key }}{{ else }}admin-token{{ end }}
{{- end }}

{{/* OTEL_* variables: (dict "ctx" $ "service" "ipw-coordinator"). */}}
{{- define "ipw-fleet.otelEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_SERVICE_NAME
  value: {{ .service }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "ipw-fleet.otelAttributes" . | quote }}
{{- with .ctx.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "ipw-fleet.otelAttributes" -}}
{{- $attrs := list (printf "k8s.namespace.name=%s" .ctx.Release.Namespace) "k8s.pod.name=$(POD_NAME)" (printf "service.namespace=%s" (include "ipw-fleet.fullname" .ctx)) }}
{{- range $k, $v := .ctx.Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}

{{/* The security context every long-running container gets: uid 10001, nothing more. */}}
{{- define "ipw-fleet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A probe: (dict "path" "/healthz" "timing" .Values.x.probes.liveness). */}}
{{- define "ipw-fleet.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: metrics
{{- toYaml .timing | nindent 0 }}
{{- end }}

{{/* The agent's environment shared by `join` and `run`. */}}
{{- define "ipw-fleet.agent.commonEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: IPW_AGENT_CONFIG
  value: /var/lib/ipw-agent/agent.json
- name: IPW_LOG_FORMAT
  value: {{ .Values.logFormat }}
{{- end }}

{{/* The persistent folder: the whole hostPath, or the node's own sub-folder of a shared claim. */}}
{{- define "ipw-fleet.agent.stateMount" -}}
- name: state
  mountPath: /var/lib/ipw-agent
  {{- if eq .Values.agent.persistence.type "pvc" }}
  subPathExpr: $(NODE_NAME)
  {{- end }}
{{- end }}
