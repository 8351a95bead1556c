{{/* The chart's name, or nameOverride. */}}
{{- define "diartune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects, at most 63 characters. */}}
{{- define "diartune.fullname" -}}
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

{{/* name-version of the chart, for the helm.sh/chart label. */}}
{{- define "diartune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "diartune.labels" -}}
helm.sh/chart: {{ include "diartune.chart" . }}
{{ include "diartune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: diartune
{{- end }}

{{/* Labels that select the operator's pod. */}}
{{- define "diartune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "diartune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "diartune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "diartune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The trial pods' ServiceAccount. Watching all namespaces, the chart cannot create one in
each: trial pods then run as each namespace's "default" (with no token mounted).
*/}}
{{- define "diartune.trialServiceAccountName" -}}
{{- $namespaces := include "diartune.watchNamespaces" . | fromJsonArray }}
{{- if and .Values.trialPolicy.serviceAccount.create $namespaces }}
{{- default (printf "%s-trial" (include "diartune.fullname" .)) .Values.trialPolicy.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.trialPolicy.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag of an image of .Values.image (operator or trial); the tag defaults to appVersion. */}}
{{- define "diartune.image" -}}
{{- $image := index .root.Values.image .which }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* The watched namespaces, checked against rbac.scope. */}}
{{- define "diartune.watchNamespaces" -}}
{{- if not (has .Values.rbac.scope (list "cluster" "namespace")) }}
{{- fail (printf "rbac.scope must be cluster or namespace, not %q" .Values.rbac.scope) }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespace") (empty .Values.watchNamespaces) }}
{{- toJson (list .Release.Namespace) }}
{{- else }}
{{- toJson (uniq .Values.watchNamespaces) }}
{{- end }}
{{- end }}

{{/*
The RBAC rules the operator needs in each namespace it watches. It reads no Secret:
trial pods get credentials through secretKeyRef.
*/}}
{{- define "diartune.namespacedRules" -}}
# The tunings: watched; the accepted-spec annotation patched; status written.
- apiGroups: ["diartune.io"]
  resources: ["diarizationtunings"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["diartune.io"]
  resources: ["diarizationtunings/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion on trials and Jobs.
- apiGroups: ["diartune.io"]
  resources: ["diarizationtunings/finalizers", "diarizationtrials/finalizers"]
  verbs: ["update"]
# One DiarizationTrial per trial.
- apiGroups: ["diartune.io"]
  resources: ["diarizationtrials"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["diartune.io"]
  resources: ["diarizationtrials/status"]
  verbs: ["get", "patch", "update"]
# One Job per trial.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# Trial pods: their termination messages carry the results.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on the tunings.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
