#!/usr/bin/env python3
"""petkv's own checks on rendered manifests: what JSON schemas cannot see.

Usage: lint.py [--restore RESTORE.yaml SET.yaml]... RENDERED.yaml...
  RENDERED.yaml: the output of `kubectl kustomize deploy/<overlay>`; each --restore pair is a
  restore render (`kubectl kustomize deploy/restore/<overlay>`) and the render of the overlay
  whose set it restores into.

kubernetes-validate checks each object against the API schema (field names and types). It
cannot check that objects agree with each other or with petkv's contract, and a mistake there
shows up only in a running cluster, often as a pod that silently never becomes ready. So:

- every Service, PodDisruptionBudget and NetworkPolicy selector selects some pod template,
  and a Service's targetPorts (and a NetworkPolicy's ports) exist on the pods it selects;
- a StatefulSet's selector matches its own template; its serviceName names a headless
  Service with publishNotReadyAddresses (peers must find each other before they are ready);
  podManagementPolicy is Parallel (OrderedReady deadlocks a full restart);
- every probe's port (number or name) is one of the container's ports, and a liveness probe
  never asks the `readiness` service (a pod without a leader must not be restarted);
- port names are valid IANA_SVC_NAMEs;
- PETKV_PEER_DOMAIN (serve and the wait-primary init container) names the set's headless
  Service, and every `$(VAR)` is defined earlier in the same container's env (Kubernetes leaves
  an unknown reference in place without complaint); POD_NAMESPACE comes from metadata.namespace;
- images carry a tag or a digest, never `:latest`;
- the Role bound to the pods' ServiceAccount grants what the env implies: get/list/watch on the
  StatefulSet named by PETKV_KUBE_STATEFULSET, get/update and create on the ConfigMap named by
  PETKV_BOOTSTRAP_CONFIGMAP; and the token is mounted;
- TLS: a container that serves the client port with TLS (PETKV_TLS_CERT) has no gRPC probe on
  it (the kubelet's gRPC probes cannot speak TLS: the probe would never pass); when serve has
  peer TLS (PETKV_PEER_TLS_CERT), the wait-primary init container has it too (it probes the
  peers' TLS ports and would wait forever in plaintext);
- terminationGracePeriodSeconds >= preStop sleep + PETKV_SHUTDOWN_GRACE_MS / 1000;
- CronJobs use concurrencyPolicy: Forbid;
- pods that run petkv set enableServiceLinks: false when a Service's link variables would land
  in petkv's PETKV_* env namespace (the Service `petkv` injects PETKV_PORT, PETKV_SERVICE_HOST…);
- restore: `petkv restore` never runs in a StatefulSet's pods, and a render that restores holds
  no StatefulSet (applied to a running set, either would change the set, its replicas first of
  all, instead of refusing); the restore Job never retries (backoffLimit 0: a refusal is final),
  names the ordinal-0 pod it prepares (--hostname: a Job's own hostname is no member's),
  writes to that pod's claim (`<template>-<set>-0`) and mounts the backups read-only;
- a restore render against the render of the overlay it restores into (--restore): same
  namespace, image, effective pull policy, pod and container security context, pull secrets,
  node selection and tolerations as the set's pods, and it creates the set's claim for
  ordinal 0 with the claim template's spec and labels (so the set adopts it as its own).

Each finding is printed as `FILE: kind/name: message`; the exit status is 1 if there is any.
Needs PyYAML only.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

# Defaults of the Kubernetes API and of `petkv serve`, used when a field is absent.
DEFAULT_TERMINATION_GRACE_SECONDS = 30
DEFAULT_NODE_GRACE_MS = 20000

DEFAULT_JOB_BACKOFF_LIMIT = 6
DEFAULT_DATA_DIR = "/var/lib/petkv"  # `petkv restore --data-dir`
# Pod settings that decide where and how a pod runs: the restore Job's pod must have the set's.
SAME_AS_THE_SET = ("securityContext", "imagePullSecrets", "nodeSelector", "tolerations", "runtimeClassName", "priorityClassName")

WORKLOAD_KINDS = {"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass
class Template:
    """A pod template inside a workload."""

    owner: Any  # the workload object
    labels: dict
    spec: dict
    namespace: str

    @property
    def ref(self) -> str:
        return ref(self.owner)

    def containers(self, init: bool = True) -> list[dict]:
        out = list(self.spec.get("containers") or [])
        if init:
            out += list(self.spec.get("initContainers") or [])
        return out

    def port_names(self) -> set[str]:
        return {p["name"] for c in self.containers(init=False) for p in c.get("ports") or [] if "name" in p}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for c in self.containers(init=False) for p in c.get("ports") or []}

    def has_port(self, port: Any) -> bool:
        if isinstance(port, int):
            return port in self.port_numbers()
        if isinstance(port, str) and port.isdigit():
            return int(port) in self.port_numbers()
        return port in self.port_names()


@dataclass
class Linter:
    filename: str
    docs: list[dict]
    findings: list[str] = field(default_factory=list)

    def report(self, obj: dict, message: str) -> None:
        self.findings.append(f"{self.filename}: {ref(obj)}: {message}")

    # -- collection -------------------------------------------------------------------

    def objects(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def templates(self) -> list[Template]:
        out = []
        for d in self.docs:
            kind = d.get("kind")
            if kind not in WORKLOAD_KINDS:
                continue
            spec = d.get("spec") or {}
            if kind == "CronJob":
                spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
            tmpl = spec.get("template") or {}
            out.append(
                Template(
                    owner=d,
                    labels=((tmpl.get("metadata") or {}).get("labels")) or {},
                    spec=tmpl.get("spec") or {},
                    namespace=namespace(d),
                )
            )
        return out

    def selected(self, obj: dict, selector: dict | None, label_selector: bool) -> list[Template]:
        """Templates in obj's namespace whose labels the selector matches."""
        return [
            t
            for t in self.templates()
            if t.namespace == namespace(obj) and matches(selector, t.labels, label_selector)
        ]

    # -- checks -----------------------------------------------------------------------

    def run(self) -> list[str]:
        for svc in self.objects("Service"):
            self.check_service(svc)
        for pdb in self.objects("PodDisruptionBudget"):
            self.check_selects_pods(pdb, (pdb.get("spec") or {}).get("selector"), "selector")
        for np in self.objects("NetworkPolicy"):
            self.check_network_policy(np)
        for sts in self.objects("StatefulSet"):
            self.check_statefulset(sts)
        for cj in self.objects("CronJob"):
            if (cj.get("spec") or {}).get("concurrencyPolicy") != "Forbid":
                self.report(cj, "concurrencyPolicy must be Forbid (overlapping runs would share one directory)")
        for t in self.templates():
            self.check_template(t)
        self.check_restores()
        return self.findings

    def restores(self) -> list[tuple[Template, dict]]:
        """Every container that runs `petkv restore`, with its pod template."""
        return [(t, c) for t in self.templates() for c in t.containers() if is_petkv(c, "restore")]

    def check_restores(self) -> None:
        restores = self.restores()
        for t, c in restores:
            owner = t.owner
            if owner.get("kind") == "StatefulSet":
                self.report(owner, f"container {c.get('name')} runs `petkv restore` in the set's own pods: applied to a running set, the restore changes the set (its template, its replicas) instead of refusing; restore with a separate Job (deploy/restore)")
                continue
            self.check_restore_job(t, c)
        if any(t.owner.get("kind") != "StatefulSet" for t, _ in restores):
            for sts in self.objects("StatefulSet"):
                self.report(sts, "a render that restores must not hold a StatefulSet: applied to a running set it would change the set (replicas, template) instead of refusing")

    def check_restore_job(self, t: Template, c: dict) -> None:
        owner, cname = t.owner, c.get("name")
        if owner.get("kind") == "Job":
            limit = (owner.get("spec") or {}).get("backoffLimit", DEFAULT_JOB_BACKOFF_LIMIT)
            if limit != 0:
                self.report(owner, f"backoffLimit is {limit}: a refused restore would be retried {limit} times with the same answer (set 0)")
        if t.spec.get("restartPolicy", "Always") != "Never":
            self.report(owner, f"restartPolicy is {t.spec.get('restartPolicy', 'Always')!r}, not Never: a refused restore would be restarted")
        hostname = arg_value(c, "--hostname") or env_value(c, "PETKV_HOSTNAME")
        if hostname is None:
            self.report(owner, f"container {cname}: `petkv restore` without --hostname: the pod's own hostname names no member of the set, so nothing would be restored")
        elif not re.fullmatch(r".+-0", hostname):
            self.report(owner, f"container {cname}: --hostname {hostname!r} is not ordinal 0: `petkv restore` stages a backup only for ordinal 0")
        data_dir = arg_value(c, "--data-dir") or env_value(c, "PETKV_DATA_DIR") or DEFAULT_DATA_DIR
        claim = claim_mounted_at(t.spec, c, data_dir)
        if claim is None:
            self.report(owner, f"container {cname}: --data-dir {data_dir} is not the mount of a volume claim: the backup would be staged on no volume")
        elif hostname is not None and not claim.endswith(f"-{hostname}"):
            self.report(owner, f"container {cname}: --data-dir {data_dir} is claim {claim!r}, which is not the volume of {hostname} (<template>-{hostname})")
        source = arg_value(c, "--from")
        mount = mount_holding(c, source) if source else None
        if mount is not None and mount.get("readOnly") is not True:
            self.report(owner, f"container {cname}: the backups ({mount.get('mountPath')}) are mounted writable: a restore never changes them (readOnly: true)")

    def check_selects_pods(self, obj: dict, selector: dict | None, what: str) -> list[Template]:
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            self.report(obj, f"{what} is empty: it would select every pod in the namespace")
            return []
        found = self.selected(obj, selector, label_selector=True)
        if not found:
            self.report(obj, f"{what} {format_selector(selector)} selects no pod template")
        return found

    def check_service(self, svc: dict) -> None:
        spec = svc.get("spec") or {}
        for p in spec.get("ports") or []:
            self.check_port_name(svc, p.get("name"), "port")
        selector = spec.get("selector")
        if not selector:
            return  # a Service without selector has hand-made endpoints
        pods = self.selected(svc, selector, label_selector=False)
        if not pods:
            self.report(svc, f"selector {format_labels(selector)} selects no pod template")
            return
        for p in spec.get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            for t in pods:
                if not t.has_port(target):
                    self.report(svc, f"port {p.get('name') or p.get('port')}: targetPort {target!r} is not a port of {t.ref}")

    def check_network_policy(self, np: dict) -> None:
        spec = np.get("spec") or {}
        pods = self.check_selects_pods(np, spec.get("podSelector"), "podSelector")
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                sel = peer.get("podSelector")
                if sel and "namespaceSelector" not in peer and (sel.get("matchLabels") or sel.get("matchExpressions")):
                    if not self.selected(np, sel, label_selector=True):
                        self.report(np, f"ingress from podSelector {format_selector(sel)} selects no pod template")
            for p in rule.get("ports") or []:
                port = p.get("port")
                for t in pods:
                    if port is not None and not t.has_port(port):
                        self.report(np, f"ingress port {port!r} is not a port of {t.ref}")

    def check_statefulset(self, sts: dict) -> None:
        spec = sts.get("spec") or {}
        tmpl_labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
        if not matches(spec.get("selector"), tmpl_labels, label_selector=True):
            self.report(sts, f"selector {format_selector(spec.get('selector'))} does not match its own template labels")
        if spec.get("podManagementPolicy", "OrderedReady") != "Parallel":
            self.report(sts, "podManagementPolicy must be Parallel: under OrderedReady a full restart deadlocks (readiness needs a quorum)")
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for when in ("whenScaled", "whenDeleted"):
            if retention.get(when, "Retain") != "Retain":
                self.report(sts, f"persistentVolumeClaimRetentionPolicy.{when} must be Retain: "
                            f"{'`kubectl scale --replicas=0` would delete every volume' if when == 'whenScaled' else '`kubectl delete statefulset` would delete every volume'}")
        service_name = spec.get("serviceName")
        svc = self.find("Service", service_name, namespace(sts))
        if svc is None:
            self.report(sts, f"serviceName {service_name!r} names no Service in this render")
        else:
            sspec = svc.get("spec") or {}
            if sspec.get("clusterIP") != "None":
                self.report(sts, f"serviceName {service_name!r} is not headless (clusterIP: None)")
            if sspec.get("publishNotReadyAddresses") is not True:
                self.report(sts, f"serviceName {service_name!r} lacks publishNotReadyAddresses: true (peers must find each other before they are ready)")
            if not matches(sspec.get("selector"), tmpl_labels, label_selector=False):
                self.report(sts, f"serviceName {service_name!r} does not select this set's pods")
        tspec = (spec.get("template") or {}).get("spec") or {}
        for c in list(tspec.get("containers") or []) + list(tspec.get("initContainers") or []):
            domain = env_value(c, "PETKV_PEER_DOMAIN")
            if domain is None:
                domain = arg_value(c, "--peer-domain")
            if domain is None:
                if is_petkv(c, "serve") or is_petkv(c, "wait-primary"):
                    self.report(sts, f"container {c.get('name')}: no PETKV_PEER_DOMAIN: peers cannot be found")
                continue
            if not domain.startswith(f"{service_name}."):
                self.report(sts, f"container {c.get('name')}: PETKV_PEER_DOMAIN {domain!r} does not name the headless Service {service_name!r}")
            parts = domain.split(".")
            if len(parts) >= 2:
                m = re.fullmatch(r"\$\(([^)]+)\)", parts[1])
                if m and not env_from_field(c, m.group(1), "metadata.namespace"):
                    self.report(sts, f"container {c.get('name')}: PETKV_PEER_DOMAIN's namespace $({m.group(1)}) is not an env from metadata.namespace")
        self.check_role(sts, tspec)
        self.check_tls(sts, tspec)

    def check_tls(self, sts: dict, tspec: dict) -> None:
        serves = [c for c in tspec.get("containers") or [] if is_petkv(c, "serve")]
        waits = [c for c in tspec.get("initContainers") or [] if is_petkv(c, "wait-primary")]
        for c in serves:
            if has_setting(c, "PETKV_TLS_CERT", "--tls-cert"):
                client_ports = {"client"} | {p["containerPort"] for p in c.get("ports") or [] if p.get("name") == "client"}
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    port = ((c.get(kind) or {}).get("grpc") or {}).get("port")
                    if port is not None and port in client_ports:
                        self.report(sts, f"container {c.get('name')}: {kind} is a gRPC probe on the TLS client port; the kubelet's gRPC probes cannot speak TLS (probe the http port's /healthz and /readyz)")
            if has_setting(c, "PETKV_PEER_TLS_CERT", "--peer-tls-cert"):
                for w in waits:
                    if not has_setting(w, "PETKV_PEER_TLS_CERT", "--peer-tls-cert"):
                        self.report(sts, f"container {w.get('name')}: serve has peer TLS but wait-primary has no PETKV_PEER_TLS_CERT: it would probe the peers in plaintext and wait forever")

    def check_role(self, sts: dict, tspec: dict) -> None:
        envs = {}
        for c in tspec.get("containers") or []:
            for name in ("PETKV_KUBE_STATEFULSET", "PETKV_BOOTSTRAP_CONFIGMAP"):
                v = env_value(c, name)
                if v is not None:
                    envs[name] = v
        if not envs:
            return
        if tspec.get("automountServiceAccountToken") is False:
            self.report(sts, "automountServiceAccountToken is false but the node talks to the Kubernetes API")
        sa = tspec.get("serviceAccountName") or "default"
        rules = self.rules_for(sa, namespace(sts))
        if "PETKV_KUBE_STATEFULSET" in envs:
            name = envs["PETKV_KUBE_STATEFULSET"]
            for verb in ("get", "list", "watch"):
                if not allows(rules, "apps", "statefulsets", verb, name):
                    self.report(sts, f"ServiceAccount {sa!r} may not {verb} statefulsets/{name} (PETKV_KUBE_STATEFULSET)")
        if "PETKV_BOOTSTRAP_CONFIGMAP" in envs:
            name = envs["PETKV_BOOTSTRAP_CONFIGMAP"]
            for verb in ("get", "update"):
                if not allows(rules, "", "configmaps", verb, name):
                    self.report(sts, f"ServiceAccount {sa!r} may not {verb} configmaps/{name} (PETKV_BOOTSTRAP_CONFIGMAP)")
            if not allows(rules, "", "configmaps", "create", None):
                self.report(sts, f"ServiceAccount {sa!r} may not create configmaps (PETKV_BOOTSTRAP_CONFIGMAP)")

    def rules_for(self, sa: str, ns: str) -> list[dict]:
        rules: list[dict] = []
        for rb in self.objects("RoleBinding"):
            if namespace(rb) != ns:
                continue
            bound = any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == sa
                and (s.get("namespace") or namespace(rb)) == ns
                for s in rb.get("subjects") or []
            )
            if not bound:
                continue
            role_ref = rb.get("roleRef") or {}
            role = self.find(role_ref.get("kind", "Role"), role_ref.get("name"), ns if role_ref.get("kind") == "Role" else None)
            if role is not None:
                rules += role.get("rules") or []
        return rules

    def check_template(self, t: Template) -> None:
        owner = t.owner
        runs_petkv = any("petkv" in str(c.get("image", "")) for c in t.containers())
        if runs_petkv and t.spec.get("enableServiceLinks", True) is not False:
            for svc in self.objects("Service"):
                prefix = str((svc.get("metadata") or {}).get("name", "")).upper().replace("-", "_") + "_"
                headless = (svc.get("spec") or {}).get("clusterIP") == "None"
                if namespace(svc) == t.namespace and not headless and prefix.startswith("PETKV_"):
                    self.report(owner, f"enableServiceLinks is not false: Service {ref(svc)} would inject {prefix}PORT, {prefix}SERVICE_HOST… into petkv's PETKV_* env")
        for c in t.containers():
            cname = c.get("name")
            self.check_image(owner, c)
            defined: set[str] = set()
            for e in c.get("env") or []:
                for var in VAR_REF.findall(str(e.get("value", ""))):
                    if var not in defined:
                        self.report(owner, f"container {cname}: env {e.get('name')} uses $({var}) before it is defined (it would stay literal)")
                defined.add(e.get("name"))
            for word in list(c.get("command") or []) + list(c.get("args") or []):
                for var in VAR_REF.findall(str(word)):
                    if var not in defined:
                        self.report(owner, f"container {cname}: argument {word!r} uses $({var}), which its env does not define")
        for c in t.containers(init=False):
            cname = c.get("name")
            own_names = {p["name"] for p in c.get("ports") or [] if "name" in p}
            own_numbers = {p["containerPort"] for p in c.get("ports") or []}
            for p in c.get("ports") or []:
                self.check_port_name(owner, p.get("name"), f"container {cname} port")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    if handler in probe:
                        port = probe[handler].get("port")
                        ok = port in own_numbers if isinstance(port, int) else port in own_names
                        if not ok:
                            self.report(owner, f"container {cname}: {kind} port {port!r} is not one of its ports")
                if kind == "livenessProbe" and (probe.get("grpc") or {}).get("service") == "readiness":
                    self.report(owner, f"container {cname}: livenessProbe asks the readiness service: a pod without a leader would be restarted")
            self.check_grace(owner, t.spec, c)

    def check_grace(self, owner: dict, spec: dict, c: dict) -> None:
        if not is_petkv(c, "serve"):
            return
        sleep = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds", 0)
        grace_ms = env_value(c, "PETKV_SHUTDOWN_GRACE_MS")
        try:
            node_grace = int(grace_ms) if grace_ms is not None else DEFAULT_NODE_GRACE_MS
        except ValueError:
            self.report(owner, f"container {c.get('name')}: PETKV_SHUTDOWN_GRACE_MS {grace_ms!r} is not a number")
            return
        need = sleep + math.ceil(node_grace / 1000)
        have = spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS)
        if have < need:
            self.report(
                owner,
                f"terminationGracePeriodSeconds {have} < preStop sleep {sleep} s + node grace {node_grace / 1000:g} s: "
                "the node would be killed in the middle of its graceful shutdown",
            )

    def check_image(self, owner: dict, c: dict) -> None:
        image = c.get("image") or ""
        if "@sha256:" in image or "@sha512:" in image:
            return
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            self.report(owner, f"container {c.get('name')}: image {image!r} has no tag or digest")
        elif last.rsplit(":", 1)[1] == "latest":
            self.report(owner, f"container {c.get('name')}: image {image!r} uses :latest")

    def check_port_name(self, obj: dict, name: Any, what: str) -> None:
        if name is None:
            return
        if not valid_port_name(str(name)):
            self.report(obj, f"{what} name {name!r} is not a valid IANA_SVC_NAME (at most 15 lowercase letters, digits and '-', a letter, no '-' at the ends or twice in a row)")

    def find(self, kind: str, name: str | None, ns: str | None) -> dict | None:
        for d in self.objects(kind):
            if (d.get("metadata") or {}).get("name") == name and (ns is None or namespace(d) == ns):
                return d
        return None


# -- helpers ----------------------------------------------------------------------------


def ref(obj: dict) -> str:
    return f"{str(obj.get('kind', '?')).lower()}/{(obj.get('metadata') or {}).get('name', '?')}"


def namespace(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


def valid_port_name(name: str) -> bool:
    return bool(IANA_SVC_NAME.match(name)) and "--" not in name and any(ch.isalpha() for ch in name)


def matches(selector: dict | None, labels: dict, label_selector: bool) -> bool:
    """Whether a selector matches labels. label_selector: a LabelSelector (matchLabels and
    matchExpressions) rather than a Service's plain map. An empty selector matches nothing here:
    the checks want a selector that names the pods."""
    if not selector:
        return False
    if not label_selector:
        return all(labels.get(k) == v for k, v in selector.items())
    ml = selector.get("matchLabels") or {}
    if not all(labels.get(k) == v for k, v in ml.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(ml or selector.get("matchExpressions"))


def format_labels(labels: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def format_selector(selector: dict | None) -> str:
    if not selector:
        return "{}"
    out = format_labels(selector.get("matchLabels") or {})
    if selector.get("matchExpressions"):
        out += f" + {len(selector['matchExpressions'])} expression(s)"
    return out


def env_value(c: dict, name: str) -> str | None:
    for e in c.get("env") or []:
        if e.get("name") == name and "value" in e:
            return str(e["value"])
    return None


def has_setting(c: dict, env: str, flag: str) -> bool:
    """Whether the container sets a petkv setting, by env (value or valueFrom) or by flag."""
    return any(e.get("name") == env for e in c.get("env") or []) or arg_value(c, flag) is not None


def env_from_field(c: dict, name: str, field_path: str) -> bool:
    for e in c.get("env") or []:
        if e.get("name") == name:
            return (((e.get("valueFrom") or {}).get("fieldRef")) or {}).get("fieldPath") == field_path
    return False


def arg_value(c: dict, flag: str) -> str | None:
    words = [str(w) for w in list(c.get("command") or []) + list(c.get("args") or [])]
    for i, w in enumerate(words):
        if w == flag and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(flag + "="):
            return w.split("=", 1)[1]
    return None


def is_petkv(c: dict, subcommand: str) -> bool:
    """Whether the container runs `petkv SUBCOMMAND` (the image's default args are `serve`)."""
    words = [str(w) for w in list(c.get("command") or []) + list(c.get("args") or [])]
    if not words:
        return subcommand == "serve" and "petkv" in str(c.get("image", ""))
    return subcommand in words


def allows(rules: Iterable[dict], group: str, resource: str, verb: str, name: str | None) -> bool:
    for r in rules:
        if group not in (r.get("apiGroups") or []) and "*" not in (r.get("apiGroups") or []):
            continue
        if resource not in (r.get("resources") or []) and "*" not in (r.get("resources") or []):
            continue
        if verb not in (r.get("verbs") or []) and "*" not in (r.get("verbs") or []):
            continue
        names = r.get("resourceNames") or []
        if names and (name is None or name not in names):
            continue
        return True
    return False


def claim_mounted_at(pod: dict, c: dict, path: str) -> str | None:
    """The claim name of the volume container c mounts at path, if it is a claim."""
    for m in c.get("volumeMounts") or []:
        if m.get("mountPath", "").rstrip("/") == path.rstrip("/"):
            for v in pod.get("volumes") or []:
                if v.get("name") == m.get("name"):
                    return ((v.get("persistentVolumeClaim") or {}).get("claimName")) or None
    return None


def mount_holding(c: dict, path: str) -> dict | None:
    """The volume mount of container c under which path lies (the longest one)."""
    best = None
    for m in c.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best.get("mountPath", "").rstrip("/")):
                best = m
    return best


def effective_pull_policy(c: dict) -> str:
    """imagePullPolicy as the API server defaults it: Always for :latest or no tag."""
    if c.get("imagePullPolicy"):
        return c["imagePullPolicy"]
    image = str(c.get("image") or "")
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    return "IfNotPresent" if ":" in last and last.rsplit(":", 1)[1] != "latest" else "Always"


def lint_restore_against(restore_docs: list[dict], set_docs: list[dict], restore_file: str, set_file: str) -> list[str]:
    """A restore render against the render of the overlay whose set it restores into: the
    restore must run as that set's pods run and prepare the volume that set will adopt."""
    restore = Linter(restore_file, [d for d in restore_docs if isinstance(d, dict)])
    found = Linter(set_file, [d for d in set_docs if isinstance(d, dict)])
    jobs = restore.restores()
    if not jobs:
        return [f"{restore_file}: no container runs `petkv restore`"]
    for t, c in jobs:
        owner, cname = t.owner, c.get("name")
        in_the_set = owner.get("kind") == "StatefulSet"  # an init container of the set's pods
        hostname = arg_value(c, "--hostname") or env_value(c, "PETKV_HOSTNAME")
        if hostname is None and in_the_set:
            hostname = f"{(owner.get('metadata') or {}).get('name')}-0"
        hostname = hostname or ""
        set_name = hostname.rsplit("-", 1)[0] if "-" in hostname else hostname
        sets = [s for s in found.objects("StatefulSet") if (s.get("metadata") or {}).get("name") == set_name]
        if not sets:
            restore.report(owner, f"restores into set {set_name!r} (--hostname {hostname!r}), which {set_file} does not hold")
            continue
        sts = sets[0]
        sspec = (sts.get("spec") or {})
        pod = ((sspec.get("template") or {}).get("spec")) or {}
        serves = [x for x in pod.get("containers") or [] if is_petkv(x, "serve")]
        if not serves:
            restore.report(owner, f"{set_file}: {ref(sts)} has no container that runs `petkv serve` to compare with")
            continue
        serve = serves[0]
        theirs = f"{ref(sts)} in {set_file}"
        if namespace(owner) != namespace(sts):
            restore.report(owner, f"namespace {namespace(owner) or '(none)'!r} is not the set's {namespace(sts) or '(none)'!r} ({theirs}): the restore would prepare a volume in another namespace")
        if c.get("image") != serve.get("image"):
            restore.report(owner, f"container {cname}: image {c.get('image')!r} is not the set's {serve.get('image')!r} ({theirs})")
        if effective_pull_policy(c) != effective_pull_policy(serve):
            restore.report(owner, f"container {cname}: imagePullPolicy {effective_pull_policy(c)} is not the set's {effective_pull_policy(serve)} ({theirs})")
        if c.get("securityContext") != serve.get("securityContext"):
            restore.report(owner, f"container {cname}: securityContext is not the set's container's ({theirs})")
        for key in SAME_AS_THE_SET:
            if t.spec.get(key) != pod.get(key):
                restore.report(owner, f"pod {key} {t.spec.get(key)!r} is not the set's {pod.get(key)!r} ({theirs})")
        if in_the_set:
            continue  # its volume is the set's own; Linter.check_restores reports the layout
        data_dir = arg_value(c, "--data-dir") or env_value(c, "PETKV_DATA_DIR") or DEFAULT_DATA_DIR
        claim = claim_mounted_at(t.spec, c, data_dir)
        templates = {f"{(v.get('metadata') or {}).get('name')}-{hostname}": v for v in sspec.get("volumeClaimTemplates") or []}
        if claim not in templates:
            restore.report(owner, f"container {cname}: stages on claim {claim!r}, which is none of {hostname}'s claims ({', '.join(sorted(templates)) or 'none'}; {theirs})")
            continue
        vct = templates[claim]
        pvcs = [p for p in restore.objects("PersistentVolumeClaim") if (p.get("metadata") or {}).get("name") == claim]
        if not pvcs:
            restore.report(owner, f"the render does not create claim {claim!r}: once the set's volumes are deleted there is nothing to restore into")
            continue
        pvc = pvcs[0]
        if namespace(pvc) != namespace(sts):
            restore.report(pvc, f"namespace {namespace(pvc) or '(none)'!r} is not the set's {namespace(sts) or '(none)'!r} ({theirs})")
        if pvc.get("spec") != vct.get("spec"):
            restore.report(pvc, f"spec is not the set's volumeClaimTemplate {(vct.get('metadata') or {}).get('name')!r} ({theirs}): {pvc.get('spec')!r} != {vct.get('spec')!r}")
        mine, want = (pvc.get("metadata") or {}).get("labels") or {}, (vct.get("metadata") or {}).get("labels") or {}
        if mine != want:
            restore.report(pvc, f"labels {format_labels(mine)} are not the set's volumeClaimTemplate's {format_labels(want)} ({theirs})")
    return restore.findings


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def lint_documents(docs: list[dict], filename: str) -> list[str]:
    return Linter(filename, [d for d in docs if isinstance(d, dict)]).run()


def lint_file(path: str) -> list[str]:
    return lint_documents(load(path), path)


def main(argv: list[str]) -> int:
    paths: list[str] = []
    pairs: list[tuple[str, str]] = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--restore":
            if len(args) < 2:
                print("--restore needs RESTORE.yaml SET.yaml", file=sys.stderr)
                return 2
            pairs.append((args.pop(0), args.pop(0)))
        else:
            paths.append(a)
    if not paths and not pairs:
        print("\n".join(__doc__.strip().splitlines()[2:6]), file=sys.stderr)
        return 2
    findings = [f for path in paths for f in lint_file(path)]
    findings += [f for r, s in pairs for f in lint_restore_against(load(r), load(s), r, s)]
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
