{{/* Names. */}}
{{- define "berry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berry.fullname" -}}
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

{{- define "berry.controlPlane.fullname" -}}
{{- printf "%s-control-plane" (include "berry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berry.proxy.fullname" -}}
{{- printf "%s-proxy" (include "berry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berry.mock.fullname" -}}
{{- printf "%s-mock-upstream" (include "berry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "berry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berry.configMapName" -}}
{{- default (printf "%s-config" (include "berry.controlPlane.fullname" .)) .Values.controlPlane.existingConfigMap }}
{{- end }}

{{- define "berry.configMapKey" -}}
{{- if .Values.controlPlane.existingConfigMap }}{{ .Values.controlPlane.existingConfigMapKey }}{{ else }}config.toml{{ end }}
{{- end }}

{{- define "berry.providerKeysSecretName" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecret }}
{{- else if .Values.providerKeys }}{{ printf "%s-provider-keys" (include "berry.fullname" .) }}
{{- end }}
{{- end }}

{{- define "berry.adminTokenSecretName" -}}
{{- default (printf "%s-admin-token" (include "berry.fullname" .)) .Values.adminToken.existingSecret }}
{{- end }}

{{/* mTLS: the Secrets mounted at /etc/berry/tls, "" when mTLS is off. */}}
{{- define "berry.mtls.controlPlaneSecret" -}}
{{- if eq .Values.mtls.mode "existingSecret" }}{{ .Values.mtls.existingSecret.controlPlane }}
{{- else if eq .Values.mtls.mode "certManager" }}{{ printf "%s-tls" (include "berry.controlPlane.fullname" .) }}
{{- end }}
{{- end }}

{{- define "berry.mtls.proxySecret" -}}
{{- if eq .Values.mtls.mode "existingSecret" }}{{ .Values.mtls.existingSecret.proxy }}
{{- else if eq .Values.mtls.mode "certManager" }}{{ printf "%s-tls" (include "berry.proxy.fullname" .) }}
{{- end }}
{{- end }}

{{/* The proxies' grace period: S + D + 5 unless overridden (never below S + D). */}}
{{- define "berry.proxy.terminationGracePeriodSeconds" -}}
{{- $s := int .Values.proxy.shutdownDelaySeconds }}
{{- $d := int .Values.proxy.drainSeconds }}
{{- if kindIs "invalid" .Values.proxy.terminationGracePeriodSeconds }}
{{- add $s $d 5 }}
{{- else }}
{{- $g := int .Values.proxy.terminationGracePeriodSeconds }}
{{- if lt $g (add $s $d) }}
{{- fail (printf "proxy.terminationGracePeriodSeconds (%d) must be at least proxy.shutdownDelaySeconds + proxy.drainSeconds (%d + %d = %d), or the kubelet kills proxies while they drain" $g $s $d (add $s $d)) }}
{{- end }}
{{- $g }}
{{- end }}
{{- end }}

{{/* Labels. */}}
{{- define "berry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "berry.labels" -}}
helm.sh/chart: {{ include "berry.chart" . }}
{{ include "berry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: berry
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "proxy"). */}}
{{- define "berry.componentLabels" -}}
{{ include "berry.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "berry.componentSelectorLabels" -}}
{{ include "berry.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "berry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod annotations of a component: (dict "ctx" $ "port" 9090 "podAnnotations" {...}
     "checksum" "..."): checksum/config when given, prometheus.io scrape annotations unless
     metrics.podAnnotations is false, then podAnnotations (which win). */}}
{{- define "berry.podAnnotations" -}}
{{- $ann := dict }}
{{- with .checksum }}
{{- $_ := set $ann "checksum/config" . }}
{{- end }}
{{- if .ctx.Values.metrics.podAnnotations }}
{{- $_ := set $ann "prometheus.io/scrape" "true" }}
{{- $_ := set $ann "prometheus.io/port" (toString .port) }}
{{- $_ := set $ann "prometheus.io/path" "/metrics" }}
{{- end }}
{{- range $k, $v := .podAnnotations }}
{{- $_ := set $ann $k $v }}
{{- end }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* An httpGet probe: (dict "path" "/healthz" "port" "http" "probe" .Values.x.livenessProbe). */}}
{{- define "berry.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .probe }}
{{- end }}

{{/* Pod template labels of one component: selector labels plus version and podLabels. */}}
{{- define "berry.podLabels" -}}
{{ include "berry.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: berry
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with .podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod-level settings every Berry pod shares. */}}
{{- define "berry.podCommon" -}}
serviceAccountName: {{ include "berry.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* nodeSelector, affinity, tolerations, priorityClassName of a component's values. */}}
{{- define "berry.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules: (dict "ctx" $ "toControlPlane" bool). */}}
{{- define "berry.networkPolicy.egress" }}
{{- $np := .ctx.Values.networkPolicy }}
# DNS, wherever the cluster resolver runs (kube-dns, node-local caches).
- ports:
    {{- range $np.dnsPorts }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- if .toControlPlane }}
# The control plane's gRPC port.
- to:
    - podSelector:
        matchLabels:
          {{- include "berry.componentSelectorLabels" (dict "ctx" .ctx "component" "control-plane") | nindent 10 }}
  ports:
    - protocol: TCP
      port: grpc
{{- end }}
{{- if .ctx.Values.demo.enabled }}
# The demo mock provider (some CNIs do not match pod addresses with ipBlock rules).
- to:
    - podSelector:
        matchLabels:
          {{- include "berry.componentSelectorLabels" (dict "ctx" .ctx "component" "mock-upstream") | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .ctx.Values.demo.port }}
{{- end }}
# Providers: anywhere but the cloud metadata endpoints.
- to:
    {{- range $cidr := $np.allowedCIDRs }}
    {{- $v6 := contains ":" $cidr }}
    - ipBlock:
        cidr: {{ $cidr }}
        {{- $except := list }}
        {{- range $np.blockedCIDRs }}
        {{- if eq $v6 (contains ":" .) }}
        {{- $except = append $except . }}
        {{- end }}
        {{- end }}
        {{- with $except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
