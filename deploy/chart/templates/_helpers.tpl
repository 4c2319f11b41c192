{{/*
Labels every object gets, as deploy/kustomization.yaml gives them
(app.kubernetes.io/part-of), plus Helm's own.
*/}}
{{- define "glaceon.labels" -}}
app.kubernetes.io/part-of: glaceon
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{/* The manager's selector labels (fixed: deploy/ uses the same). */}}
{{- define "glaceon.selectorLabels" -}}
app.kubernetes.io/name: glaceon
app.kubernetes.io/component: manager
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: a digest wins over the
tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "glaceon.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The injected sidecar image: empty values mean the manager's own default,
the sidecar of its own version.
*/}}
{{- define "glaceon.sidecarImage" -}}
{{- $s := .Values.sidecar.image -}}
{{- if or $s.repository $s.tag $s.digest -}}
{{- include "glaceon.image" (list (dict "repository" (default "ghcr.io/glaceon/glaceon-sidecar" $s.repository) "tag" $s.tag "digest" $s.digest) .) -}}
{{- end -}}
{{- end -}}

{{/* A resource list as the manager's flags take it: cpu=10m,memory=32Mi. */}}
{{- define "glaceon.resourceList" -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}
{{- $parts = append $parts (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}
