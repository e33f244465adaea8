{{/*
Names, labels, images, and the ONE definition of the CSI socket paths: every container that speaks CSI
(Lunar, the sidecars, the registrar's kubelet registration path) takes its path from the helpers below.
*/}}

{{- define "lunar.driverName" -}}iscsi.lunar.dev{{- end -}}

{{- define "lunar.fullname" -}}
{{- if contains "lunar" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lunar" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lunar.labels" -}}
app.kubernetes.io/name: lunar
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: lunar
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lunar.selectorLabels" -}}
app.kubernetes.io/name: lunar
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lunar.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* "repository:tag" of a sidecar: include "lunar.sidecarImage" (list . "provisioner") */}}
{{- define "lunar.sidecarImage" -}}
{{- $root := index . 0 -}}
{{- $s := index $root.Values.sidecars (index . 1) -}}
{{- printf "%s:%s" $s.repository $s.tag -}}
{{- end -}}

{{/* ---- CSI socket paths: the only place they are written ---------------------------------------- */}}
{{/* Directory of the CSI socket inside every container of a pod (an emptyDir or the plugin hostPath). */}}
{{- define "lunar.socketDir" -}}/csi{{- end -}}
{{/* The socket inside the containers: the sidecars' --csi-address. */}}
{{- define "lunar.socketPath" -}}{{ include "lunar.socketDir" . }}/csi.sock{{- end -}}
{{/* Lunar's own endpoint flag value (lunar serve --csi-endpoint / lunar node --endpoint). */}}
{{- define "lunar.endpoint" -}}unix://{{ include "lunar.socketPath" . }}{{- end -}}
{{/* The node plugin's socket directory on the host, where kubelet dials it. */}}
{{- define "lunar.pluginDir" -}}{{ .Values.kubeletDir }}/plugins/{{ include "lunar.driverName" . }}{{- end -}}
{{/* The registrar's --kubelet-registration-path: the same socket seen from the host. */}}
{{- define "lunar.registrationPath" -}}{{ include "lunar.pluginDir" . }}/csi.sock{{- end -}}
{{- define "lunar.registryDir" -}}{{ .Values.kubeletDir }}/plugins_registry{{- end -}}

{{/* Mount of the socket directory, shared by Lunar and its sidecars. */}}
{{- define "lunar.socketMount" -}}
- name: socket-dir
  mountPath: {{ include "lunar.socketDir" . }}
{{- end -}}

{{/* The StorageClass parameters Lunar takes (docs/csi.md). */}}
{{- define "lunar.classParameters" -}}
{{- $root := index . 0 -}}
{{- $sc := index . 1 -}}
{{- $fs := index . 2 -}}
{{- if $fs }}
csi.storage.k8s.io/fstype: {{ $fs }}
fsType: {{ $fs }}
{{- end }}
chap: {{ $root.Values.chap }}
thin: {{ $sc.thin | quote }}
{{- end -}}

{{/*
volumeBindingMode: Immediate while every node reaches every volume (no topology: the target is on the
network, the PV can be made before a pod exists, and CDI imports into a DataVolume right away);
WaitForFirstConsumer with topology, so that the provisioner passes the chosen node's segment.
*/}}
{{- define "lunar.bindingMode" -}}
{{- if .Values.controller.topology.enabled -}}WaitForFirstConsumer{{- else -}}Immediate{{- end -}}
{{- end -}}
