{{/* Chart name, overridable. */}}
{{- define "onus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name when it already contains the chart name. */}}
{{- define "onus.fullname" -}}
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

{{/* The namespace of every namespaced object: namespaceOverride, else the release's. */}}
{{- define "onus.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "onus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; must never change between releases. */}}
{{- define "onus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "onus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "onus.labels" -}}
helm.sh/chart: {{ include "onus.chart" . }}
{{ include "onus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: onus
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "onus.serviceAccountName" -}}
{{- default (include "onus.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "onus.leaseName" -}}
{{- default (printf "%s-leader" (include "onus.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The image: global.imageRegistry, else image.registry, in front of image.repository (an empty
registry leaves the repository as it is); then the digest, else the tag (default: appVersion).
*/}}
{{- define "onus.image" -}}
{{- $global := .Values.global | default dict }}
{{- $registry := default (.Values.image.registry | default "") ($global.imageRegistry | default "") | trimSuffix "/" }}
{{- $repository := .Values.image.repository }}
{{- if $registry }}{{ $repository = printf "%s/%s" $registry $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Image pull secrets: global.imagePullSecrets, then imagePullSecrets; each a name or {name: ...}.
*/}}
{{- define "onus.imagePullSecrets" -}}
{{- $global := .Values.global | default dict }}
{{- $names := list }}
{{- range (concat ($global.imagePullSecrets | default list) (.Values.imagePullSecrets | default list)) }}
{{- $name := . }}
{{- if kindIs "map" . }}{{ $name = .name }}{{ end }}
{{- if not (has $name $names) }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- range $names }}
- name: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Enforce mode and the admission policies: on unless set to false. A missing key counts as on, so
values reused from a release of an older chart (helm upgrade --reuse-values keeps the old values
and ignores new defaults) neither fail to render nor switch a protection off.
*/}}
{{- define "onus.enforce" -}}
{{- if dig "enforce" "enabled" true .Values.AsMap }}true{{ end }}
{{- end }}

{{- define "onus.admissionPolicy" -}}
{{- if dig "admissionPolicy" "enabled" true .Values.AsMap }}true{{ end }}
{{- end }}

{{/*
The names of the ValidatingAdmissionPolicies (and bindings) the operator generates for the
controls it checks at admission (onus::admission::all_names; a chart test keeps them equal).
*/}}
{{- define "onus.generatedAdmissionNames" -}}
onus-iam-01,onus-iam-01-warn,onus-iam-02,onus-iam-02-warn,onus-iam-05,onus-iam-05-warn,onus-iam-07,onus-iam-07-warn,onus-wkl-10,onus-wkl-10-warn,onus-net-05,onus-net-05-warn,onus-dat-01,onus-dat-01-warn
{{- end }}

{{/*
The admission policies are rendered: enabled, and the API server serves
admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy. Without a cluster (helm template)
Helm knows no kinds and its default Kubernetes version is old: --kube-version 1.30 or later, or
--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy, count as serving it.
*/}}
{{- define "onus.admissionPolicyServed" -}}
{{- if or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/*
The runbook annotation of an alert: runbook_url under prometheusRule.runbookBaseUrl, or, when
that is empty, the runbook's path in the onus repository. Called with (list .Values.prometheusRule "AlertName").
*/}}
{{- define "onus.runbook" -}}
{{- $r := index . 0 }}{{ $alert := index . 1 -}}
{{- if $r.runbookBaseUrl -}}
runbook_url: {{ printf "%s/%s.md" (trimSuffix "/" $r.runbookBaseUrl) $alert | quote }}
{{- else -}}
runbook: {{ printf "docs/runbooks/%s.md in the onus repository" $alert | quote }}
{{- end }}
{{- end }}
