{{/* The chart's name. */}}
{{- define "termguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Every object's name: fullnameOverride, else RELEASE-NAME (RELEASE when it holds NAME). */}}
{{- define "termguard.fullname" -}}
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
{{- define "termguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "termguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the pods (Deployment, PDB, Service, spread, anti-affinity). */}}
{{- define "termguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "termguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "termguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "termguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The --health-listen port: the container's, the probes' and the Service's target. */}}
{{- define "termguard.port" -}}
{{- .Values.run.healthListen | toString | splitList ":" | last }}
{{- end }}

{{/*
`termguard run`'s arguments, one value of .Values.run per flag, in `termguard run --help`'s
order. An empty string or false leaves the flag out (termguard's default applies).
*/}}
{{- define "termguard.args" -}}
{{- $r := .Values.run -}}
- run
- {{ printf "--queue-url=%v" (required "run.queueUrl is required: the SQS queue termguard consumes" $r.queueUrl) | quote }}
{{- with $r.log }}
- {{ printf "--log=%v" . | quote }}
{{- end }}
{{- if $r.drainOnRebalance }}
- --drain-on-rebalance
{{- end }}
{{- if $r.logJson }}
- --log-json
{{- end }}
{{- if $r.completeLaunch }}
- --complete-launch
{{- end }}
{{- with $r.launchTimeout }}
- {{ printf "--launch-timeout=%v" . | quote }}
{{- end }}
{{- with $r.clusterName }}
- {{ printf "--cluster-name=%v" . | quote }}
{{- end }}
{{- with $r.managedAsgTag }}
- {{ printf "--managed-asg-tag=%v" . | quote }}
{{- end }}
{{- with $r.deadlineMargin }}
- {{ printf "--deadline-margin=%v" . | quote }}
{{- end }}
{{- with $r.maxInFlight }}
- {{ printf "--max-in-flight=%v" . | quote }}
{{- end }}
{{- with $r.receivers }}
- {{ printf "--receivers=%v" . | quote }}
{{- end }}
{{- with $r.maxConcurrentDrains }}
- {{ printf "--max-concurrent-drains=%v" . | quote }}
{{- end }}
{{- with $r.visibilityTimeout }}
- {{ printf "--visibility-timeout=%v" . | quote }}
{{- end }}
{{- with $r.healthListen }}
- {{ printf "--health-listen=%v" . | quote }}
{{- end }}
{{- if $r.noEvents }}
- --no-events
{{- end }}
{{- with $r.webhookUrl }}
- {{ printf "--webhook-url=%v" . | quote }}
{{- end }}
{{- with $r.webhookTemplate }}
- {{ printf "--webhook-template=%v" . | quote }}
{{- end }}
{{- with $r.webhookEvents }}
- {{ printf "--webhook-events=%v" (join "," .) | quote }}
{{- end }}
{{- with $r.config }}
- {{ printf "--config=%v" . | quote }}
{{- end }}
{{- with $r.kubeconfig }}
- {{ printf "--kubeconfig=%v" . | quote }}
{{- end }}
{{- with $r.context }}
- {{ printf "--context=%v" . | quote }}
{{- end }}
{{- end }}
