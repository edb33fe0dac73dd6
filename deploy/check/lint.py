#!/usr/bin/env python3
"""petkv's own checks on rendered manifests: what JSON schemas cannot see.

Usage: lint.py RENDERED.yaml...   (the output of `kubectl kustomize deploy/<overlay>`)

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
  in petkv's PETKV_* env namespace (the Service `petkv` injects PETKV_PORT, PETKV_SERVICE_HOST…).

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
        return self.findings

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


def lint_documents(docs: list[dict], filename: str) -> list[str]:
    return Linter(filename, [d for d in docs if isinstance(d, dict)]).run()


def lint_file(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    return lint_documents(docs, path)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    findings = [f for path in argv for f in lint_file(path)]
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
