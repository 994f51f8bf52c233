{{/* Names, labels and the checks that need more than values.schema.json. */}}

{{- define "bap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; the control-plane DaemonSet appends "-cp". */}}
{{- define "bap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 60 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 60 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 60 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bap.labels" -}}
helm.sh/chart: {{ include "bap.chart" . }}
{{ include "bap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bcs-apiserver-proxy
{{- end -}}

{{- define "bap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /*
Whether the control-plane pods get a service account of their own: they do
when they hold the outside VIP and the chart makes the accounts, so that
only they may write the Lease (the worker pods' token, on every node, may
not).
*/ -}}
{{- define "bap.vipServiceAccount" -}}
{{- if and .Values.controlPlane.outsideVip.vip .Values.serviceAccount.create -}}
{{- printf "%s-vip" (include "bap.serviceAccountName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- /* The service account of the DaemonSet for `role`. */ -}}
{{- define "bap.podServiceAccount" -}}
{{- $vip := include "bap.vipServiceAccount" .root -}}
{{- if and (eq .role "control-plane") $vip -}}
{{- $vip -}}
{{- else -}}
{{- include "bap.serviceAccountName" .root -}}
{{- end -}}
{{- end -}}

{{/* The Role and RoleBinding live in `default`: the release namespace in
their name keeps two releases of the same name apart. */}}
{{- define "bap.rbacName" -}}
{{- printf "%s-%s" (include "bap.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bap.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when any VIP is IPv6 (written [addr]:port). */}}
{{- define "bap.anyIPv6" -}}
{{- range .Values.virtualServers -}}
{{- if hasPrefix "[" .vip -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The control-plane DaemonSet's VIP mode, "auto" resolved. */}}
{{- define "bap.controlPlaneVipMode" -}}
{{- if eq .Values.controlPlane.vipMode "auto" -}}
{{- if include "bap.anyIPv6" . -}}address{{- else -}}route{{- end -}}
{{- else -}}
{{- .Values.controlPlane.vipMode -}}
{{- end -}}
{{- end -}}

{{/* The metrics listener, ADDR:PORT with IPv6 in brackets. */}}
{{- define "bap.metricsAddr" -}}
{{- $a := .Values.metrics.bindAddress -}}
{{- if eq $a "node" -}}
{{- /* Replaced by APISERVER_PROXY_METRICS_ADDR, the node's address. */ -}}
{{- printf "0.0.0.0:%d" (int .Values.metrics.port) -}}
{{- else if contains ":" $a -}}
{{- printf "[%s]:%d" $a (int .Values.metrics.port) -}}
{{- else -}}
{{- printf "%s:%d" $a (int .Values.metrics.port) -}}
{{- end -}}
{{- end -}}

{{/*
An IP:PORT the schema let through by its shape: octets up to 255, a port
from 1 to 65535. dict: path (for the message), value.
*/}}
{{- define "bap.checkEndpoint" -}}
{{- $value := .value -}}
{{- $host := regexReplaceAll ":[0-9]+$" $value "" -}}
{{- $port := regexFind "[0-9]+$" $value | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "%s: %q has port %d: use a port from 1 to 65535" .path $value $port) -}}
{{- end -}}
{{- if not (hasPrefix "[" $host) -}}
{{- $octets := splitList "." $host -}}
{{- $bad := ne (len $octets) 4 -}}
{{- range $octets -}}
{{- if or (not (regexMatch "^[0-9]{1,3}$" .)) (gt (int .) 255) -}}{{- $bad = true -}}{{- end -}}
{{- end -}}
{{- if $bad -}}
{{- fail (printf "%s: %q is not IP:PORT: write an IPv4 address such as 10.103.97.2:6443, or IPv6 as [fd00::2]:6443" .path $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Checks across values that a JSON schema cannot express. Each failure says
which value to change. Included once, from the ConfigMap.
*/}}
{{- define "bap.validate" -}}
{{- $seen := dict -}}
{{- range $i, $vs := .Values.virtualServers -}}
{{- include "bap.checkEndpoint" (dict "path" (printf "virtualServers[%d].vip" $i) "value" $vs.vip) -}}
{{- range $j, $seed := $vs.seeds -}}
{{- include "bap.checkEndpoint" (dict "path" (printf "virtualServers[%d].seeds[%d]" $i $j) "value" $seed) -}}
{{- end -}}
{{- if hasKey $seen $vs.vip -}}
{{- fail (printf "virtualServers[%d].vip: %s is configured twice" $i $vs.vip) -}}
{{- end -}}
{{- $_ := set $seen $vs.vip true -}}
{{- $v6 := hasPrefix "[" $vs.vip -}}
{{- range $j, $seed := $vs.seeds -}}
{{- if ne $v6 (hasPrefix "[" $seed) -}}
{{- fail (printf "virtualServers[%d].seeds[%d]: %s is not of the same address family as the VIP %s: IPVS cannot mix IPv4 and IPv6 in one virtual server" $i $j $seed $vs.vip) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if include "bap.anyIPv6" . -}}
{{- $workers := .Values.vipMode -}}
{{- if eq $workers "route" -}}
{{- fail "vipMode: route works for IPv4 VIPs only; use vipMode: address with an IPv6 VIP" -}}
{{- end -}}
{{- if and (eq .Values.controlPlane.daemonSet "separate") (eq .Values.controlPlane.vipMode "route") -}}
{{- fail "controlPlane.vipMode: route works for IPv4 VIPs only; use address or auto with an IPv6 VIP" -}}
{{- end -}}
{{- end -}}
{{- with .Values.controlPlane.outsideVip -}}
{{- if .vip -}}
{{- include "bap.checkEndpoint" (dict "path" "controlPlane.outsideVip.vip" "value" .vip) -}}
{{- if ne $.Values.controlPlane.daemonSet "separate" -}}
{{- fail "controlPlane.outsideVip needs controlPlane.daemonSet: separate (the election runs on control-plane nodes only)" -}}
{{- end -}}
{{- if not .interface -}}
{{- fail "controlPlane.outsideVip.interface: give the control-plane nodes' interface on the VIP's network (eth0, ens3...)" -}}
{{- end -}}
{{- if not .apiservers -}}
{{- fail "controlPlane.outsideVip.apiservers: give the apiservers to elect through, as IP:PORT" -}}
{{- end -}}
{{- range $i, $a := .apiservers -}}
{{- include "bap.checkEndpoint" (dict "path" (printf "controlPlane.outsideVip.apiservers[%d]" $i) "value" $a) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.health.clientCert (not .Values.health.clientKey) -}}
{{- fail "health.clientCert needs health.clientKey (they go together)" -}}
{{- end -}}
{{- if and .Values.health.clientKey (not .Values.health.clientCert) -}}
{{- fail "health.clientKey needs health.clientCert (they go together)" -}}
{{- end -}}
{{- if and .Values.securityContext.privileged (not .Values.securityContext.allowPrivilegeEscalation) -}}
{{- fail "securityContext.privileged: true needs securityContext.allowPrivilegeEscalation: true (Kubernetes refuses the pair otherwise)" -}}
{{- end -}}
{{- end -}}

{{- /*
The container's security context: the values' one, plus NET_RAW on the
control-plane DaemonSet when it holds the outside VIP (the announcements
of a moved VIP go out on a packet socket and a raw ICMPv6 socket).
*/ -}}
{{- define "bap.securityContext" -}}
{{- $v := .root.Values -}}
{{- $sc := deepCopy $v.securityContext -}}
{{- if and (eq .role "control-plane") $v.controlPlane.outsideVip.vip -}}
{{- $caps := $sc.capabilities | default dict -}}
{{- $add := $caps.add | default list -}}
{{- if not (has "NET_RAW" $add) -}}
{{- $_ := set $caps "add" (append $add "NET_RAW") -}}
{{- end -}}
{{- $_ := set $sc "capabilities" $caps -}}
{{- end -}}
{{- toYaml $sc -}}
{{- end -}}
