"""Tests of deploy/check/lint.py: each broken manifest must produce its finding, and the real
rendered base must produce none.

Run: python3 -m unittest discover -s deploy/check   (stdlib + PyYAML)
The real-base test renders deploy/base with `kubectl kustomize`, or reads the file named by
PETKV_RENDERED_BASE (scripts/check-deploy.sh passes its render); without either it is skipped.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# A small set that passes: the shape of deploy/base with only what the checks look at.
GOOD = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: petkv, namespace: ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: petkv, namespace: ns}
rules:
  - apiGroups: [apps]
    resources: [statefulsets]
    resourceNames: [petkv]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [petkv-bootstrap]
    verbs: [get, update, patch]
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: petkv, namespace: ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: petkv}
subjects: [{kind: ServiceAccount, name: petkv}]
---
apiVersion: v1
kind: Service
metadata: {name: petkv-peers, namespace: ns}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: petkv}
  ports: [{name: client, port: 7379, targetPort: client}, {name: peer, port: 7380, targetPort: peer}]
---
apiVersion: v1
kind: Service
metadata: {name: petkv, namespace: ns}
spec:
  selector: {app: petkv}
  ports: [{name: client, port: 7379, targetPort: client}, {name: http, port: 7381, targetPort: 7381}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: petkv, namespace: ns}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: petkv}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: petkv, namespace: ns}
spec:
  podSelector: {matchLabels: {app: petkv}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: petkv}}}]
      ports: [{port: peer}]
    - from: [{podSelector: {}}]
      ports: [{port: client}, {port: 7381}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: petkv, namespace: ns}
spec:
  serviceName: petkv-peers
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: petkv}}
  template:
    metadata: {labels: {app: petkv, extra: x}}
    spec:
      serviceAccountName: petkv
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      initContainers:
        - name: wait-primary
          image: ghcr.io/petkv/petkv:0.1.0
          args: [wait-primary]
          env:
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: PETKV_PEER_DOMAIN, value: "petkv-peers.$(POD_NAMESPACE).svc.cluster.local"}
      containers:
        - name: petkv
          image: ghcr.io/petkv/petkv:0.1.0
          args: [serve]
          ports:
            - {name: client, containerPort: 7379}
            - {name: peer, containerPort: 7380}
            - {name: http, containerPort: 7381}
          env:
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: PETKV_PEER_DOMAIN, value: "petkv-peers.$(POD_NAMESPACE).svc.cluster.local"}
            - {name: PETKV_SHUTDOWN_GRACE_MS, value: "20000"}
            - {name: PETKV_KUBE_STATEFULSET, value: petkv}
            - {name: PETKV_BOOTSTRAP_CONFIGMAP, value: petkv-bootstrap}
          startupProbe: {grpc: {port: 7379, service: startup}}
          readinessProbe: {grpc: {port: 7379, service: readiness}}
          livenessProbe: {grpc: {port: 7379, service: liveness}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: petkv-backup, namespace: ns}
spec:
  schedule: "17 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: petkv-backup}}
        spec:
          restartPolicy: Never
          enableServiceLinks: false
          containers:
            - name: backup
              image: ghcr.io/petkv/petkv@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
              args: [backup, --endpoints, "petkv:7379", --out-dir, /backups]
"""


def good() -> list[dict]:
    return [d for d in yaml.safe_load_all(GOOD) if d]


def obj(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind}/{name}")


def sts_pod(docs: list[dict]) -> dict:
    return obj(docs, "StatefulSet", "petkv")["spec"]["template"]["spec"]


def serve(docs: list[dict]) -> dict:
    return sts_pod(docs)["containers"][0]


def set_env(container: dict, name: str, value: str) -> None:
    for e in container["env"]:
        if e["name"] == name:
            e.clear()
            e.update({"name": name, "value": value})
            return
    container["env"].append({"name": name, "value": value})


class LintTest(unittest.TestCase):
    def assertFinding(self, docs: list[dict], *expected: str) -> None:
        findings = lint.lint_documents(docs, "test.yaml")
        for text in expected:
            self.assertTrue(
                any(text in f for f in findings),
                f"expected a finding containing {text!r}, got:\n" + "\n".join(findings or ["(none)"]),
            )

    def test_good_fixture_passes(self):
        self.assertEqual(lint.lint_documents(good(), "test.yaml"), [])

    def test_finding_format(self):
        docs = good()
        obj(docs, "CronJob", "petkv-backup")["spec"]["concurrencyPolicy"] = "Allow"
        self.assertEqual(
            lint.lint_documents(docs, "r.yaml"),
            ["r.yaml: cronjob/petkv-backup: concurrencyPolicy must be Forbid (overlapping runs would share one directory)"],
        )

    def test_service_selector_matching_no_pods(self):
        docs = good()
        obj(docs, "Service", "petkv")["spec"]["selector"] = {"app": "petk"}
        self.assertFinding(docs, "service/petkv: selector {app=petk} selects no pod template")

    def test_service_in_another_namespace_selects_nothing(self):
        docs = good()
        obj(docs, "Service", "petkv")["metadata"]["namespace"] = "other"
        self.assertFinding(docs, "service/petkv: selector {app=petkv} selects no pod template")

    def test_service_target_port_missing(self):
        docs = good()
        obj(docs, "Service", "petkv")["spec"]["ports"][0]["targetPort"] = "grpc"
        self.assertFinding(docs, "service/petkv: port client: targetPort 'grpc' is not a port of statefulset/petkv")

    def test_service_numeric_target_port_missing(self):
        docs = good()
        obj(docs, "Service", "petkv")["spec"]["ports"][1]["targetPort"] = 9090
        self.assertFinding(docs, "targetPort 9090 is not a port of statefulset/petkv")

    def test_pdb_selector(self):
        docs = good()
        obj(docs, "PodDisruptionBudget", "petkv")["spec"]["selector"] = {"matchLabels": {"app": "nope"}}
        self.assertFinding(docs, "poddisruptionbudget/petkv: selector {app=nope} selects no pod template")

    def test_pdb_empty_selector(self):
        docs = good()
        obj(docs, "PodDisruptionBudget", "petkv")["spec"]["selector"] = {}
        self.assertFinding(docs, "poddisruptionbudget/petkv: selector is empty")

    def test_network_policy_selectors_and_ports(self):
        docs = good()
        spec = obj(docs, "NetworkPolicy", "petkv")["spec"]
        spec["ingress"][0]["from"][0]["podSelector"] = {"matchLabels": {"app": "other"}}
        spec["ingress"][1]["ports"][0]["port"] = "clients"
        self.assertFinding(
            docs,
            "networkpolicy/petkv: ingress from podSelector {app=other} selects no pod template",
            "networkpolicy/petkv: ingress port 'clients' is not a port of statefulset/petkv",
        )

    def test_network_policy_pod_selector(self):
        docs = good()
        obj(docs, "NetworkPolicy", "petkv")["spec"]["podSelector"] = {"matchLabels": {"app": "x"}}
        self.assertFinding(docs, "networkpolicy/petkv: podSelector {app=x} selects no pod template")

    def test_statefulset_selector_not_matching_template(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["spec"]["selector"] = {"matchLabels": {"app": "petkv", "tier": "db"}}
        self.assertFinding(docs, "statefulset/petkv: selector {app=petkv, tier=db} does not match its own template labels")

    def test_match_expressions(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["spec"]["selector"] = {
            "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["petkv"]}]
        }
        self.assertFinding(docs, "does not match its own template labels")

    def test_ordered_ready(self):
        docs = good()
        del obj(docs, "StatefulSet", "petkv")["spec"]["podManagementPolicy"]
        self.assertFinding(docs, "podManagementPolicy must be Parallel")

    def test_volumes_deleted_on_scale_down(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenScaled": "Delete"}
        self.assertFinding(docs, "whenScaled must be Retain")

    def test_volumes_deleted_with_the_set(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete"}
        self.assertFinding(docs, "whenDeleted must be Retain")

    def test_service_name_missing(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["spec"]["serviceName"] = "petkv-headless"
        self.assertFinding(docs, "serviceName 'petkv-headless' names no Service in this render")

    def test_service_name_not_headless(self):
        docs = good()
        spec = obj(docs, "Service", "petkv-peers")["spec"]
        del spec["clusterIP"]
        spec["publishNotReadyAddresses"] = False
        self.assertFinding(
            docs,
            "serviceName 'petkv-peers' is not headless",
            "serviceName 'petkv-peers' lacks publishNotReadyAddresses: true",
        )

    def test_probe_ports(self):
        docs = good()
        c = serve(docs)
        c["readinessProbe"]["grpc"]["port"] = 7380 + 1000
        c["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "metrics"}}
        c["startupProbe"] = {"tcpSocket": {"port": "client"}}
        self.assertFinding(
            docs,
            "container petkv: readinessProbe port 8380 is not one of its ports",
            "container petkv: livenessProbe port 'metrics' is not one of its ports",
        )
        self.assertFalse(any("startupProbe" in f for f in lint.lint_documents(docs, "t")))

    def test_liveness_must_not_need_a_leader(self):
        docs = good()
        serve(docs)["livenessProbe"]["grpc"]["service"] = "readiness"
        self.assertFinding(docs, "livenessProbe asks the readiness service")

    def test_port_names(self):
        for bad in ["peer-transport-long", "Client", "peer--x", "-peer", "peer-", "7379", "c_lient"]:
            with self.subTest(name=bad):
                docs = good()
                serve(docs)["ports"].append({"name": bad, "containerPort": 9999})
                self.assertFinding(docs, f"container petkv port name {bad!r} is not a valid IANA_SVC_NAME")
        for ok in ["client", "peer", "http", "h2c-7379", "a" * 15]:
            self.assertTrue(lint.valid_port_name(ok), ok)

    def test_service_port_name(self):
        docs = good()
        obj(docs, "Service", "petkv")["spec"]["ports"][0]["name"] = "Client"
        self.assertFinding(docs, "service/petkv: port name 'Client' is not a valid IANA_SVC_NAME")

    def test_peer_domain_names_wrong_service(self):
        docs = good()
        init = sts_pod(docs)["initContainers"][0]
        set_env(init, "PETKV_PEER_DOMAIN", "petkv.$(POD_NAMESPACE).svc.cluster.local")
        self.assertFinding(
            docs,
            "container wait-primary: PETKV_PEER_DOMAIN 'petkv.$(POD_NAMESPACE).svc.cluster.local' does not name the headless Service 'petkv-peers'",
        )

    def test_peer_domain_missing_in_init(self):
        docs = good()
        init = sts_pod(docs)["initContainers"][0]
        init["env"] = [e for e in init["env"] if e["name"] != "PETKV_PEER_DOMAIN"]
        self.assertFinding(docs, "container wait-primary: no PETKV_PEER_DOMAIN")

    def test_peer_domain_flag_is_read(self):
        docs = good()
        init = sts_pod(docs)["initContainers"][0]
        init["env"] = [e for e in init["env"] if e["name"] != "PETKV_PEER_DOMAIN"]
        init["args"] = ["wait-primary", "--peer-domain", "wrong.$(POD_NAMESPACE).svc.cluster.local"]
        self.assertFinding(docs, "does not name the headless Service 'petkv-peers'")

    def test_namespace_var_used_before_defined(self):
        docs = good()
        c = serve(docs)
        c["env"] = c["env"][1:] + c["env"][:1]  # POD_NAMESPACE moved after its use
        self.assertFinding(docs, "container petkv: env PETKV_PEER_DOMAIN uses $(POD_NAMESPACE) before it is defined")

    def test_namespace_var_not_from_metadata(self):
        docs = good()
        c = serve(docs)
        c["env"][0] = {"name": "POD_NAMESPACE", "value": "default"}
        self.assertFinding(docs, "PETKV_PEER_DOMAIN's namespace $(POD_NAMESPACE) is not an env from metadata.namespace")

    def test_escaped_reference_is_fine(self):
        docs = good()
        set_env(serve(docs), "PETKV_NOTE", "$$(NOT_A_REF)")
        self.assertEqual(lint.lint_documents(docs, "t"), [])

    def test_images(self):
        docs = good()
        serve(docs)["image"] = "ghcr.io/petkv/petkv"
        sts_pod(docs)["initContainers"][0]["image"] = "ghcr.io/petkv/petkv:latest"
        self.assertFinding(
            docs,
            "container petkv: image 'ghcr.io/petkv/petkv' has no tag or digest",
            "container wait-primary: image 'ghcr.io/petkv/petkv:latest' uses :latest",
        )

    def test_registry_port_is_not_a_tag(self):
        docs = good()
        serve(docs)["image"] = "localhost:5000/petkv"
        self.assertFinding(docs, "image 'localhost:5000/petkv' has no tag or digest")

    def test_role_missing_statefulset_watch(self):
        docs = good()
        obj(docs, "Role", "petkv")["rules"][0]["verbs"] = ["get"]
        self.assertFinding(
            docs,
            "ServiceAccount 'petkv' may not list statefulsets/petkv (PETKV_KUBE_STATEFULSET)",
            "ServiceAccount 'petkv' may not watch statefulsets/petkv",
        )

    def test_role_names_other_statefulset(self):
        docs = good()
        set_env(serve(docs), "PETKV_KUBE_STATEFULSET", "kv")
        self.assertFinding(docs, "may not get statefulsets/kv")

    def test_role_missing_configmap(self):
        docs = good()
        role = obj(docs, "Role", "petkv")
        role["rules"] = role["rules"][:1]
        self.assertFinding(
            docs,
            "may not get configmaps/petkv-bootstrap (PETKV_BOOTSTRAP_CONFIGMAP)",
            "may not update configmaps/petkv-bootstrap",
            "may not create configmaps",
        )

    def test_role_not_bound_to_the_pods_account(self):
        docs = good()
        sts_pod(docs)["serviceAccountName"] = "other"
        self.assertFinding(docs, "ServiceAccount 'other' may not get statefulsets/petkv")

    def test_token_not_mounted(self):
        docs = good()
        sts_pod(docs)["automountServiceAccountToken"] = False
        self.assertFinding(docs, "automountServiceAccountToken is false")

    def test_grace_period_too_short(self):
        docs = good()
        sts_pod(docs)["terminationGracePeriodSeconds"] = 24
        self.assertFinding(docs, "statefulset/petkv: terminationGracePeriodSeconds 24 < preStop sleep 5 s + node grace 20 s")

    def test_grace_period_default(self):
        docs = good()
        del sts_pod(docs)["terminationGracePeriodSeconds"]
        set_env(serve(docs), "PETKV_SHUTDOWN_GRACE_MS", "25500")
        self.assertFinding(docs, "terminationGracePeriodSeconds 30 < preStop sleep 5 s + node grace 25.5 s")

    def test_grpc_probe_on_a_tls_client_port(self):
        docs = good()
        set_env(serve(docs), "PETKV_TLS_CERT", "/etc/petkv/tls/$(POD_NAMESPACE).pem")
        self.assertFinding(docs, "readinessProbe is a gRPC probe on the TLS client port", "livenessProbe is a gRPC probe")
        for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            serve(docs)[kind] = {"httpGet": {"port": "http", "path": path}}
        del serve(docs)["startupProbe"]
        self.assertEqual(lint.lint_documents(docs, "test.yaml"), [])

    def test_peer_tls_without_it_in_wait_primary(self):
        docs = good()
        set_env(serve(docs), "PETKV_PEER_TLS_CERT", "/etc/petkv/tls/p.pem")
        self.assertFinding(docs, "container wait-primary: serve has peer TLS but wait-primary has no PETKV_PEER_TLS_CERT")
        set_env(sts_pod(docs)["initContainers"][0], "PETKV_PEER_TLS_CERT", "/etc/petkv/tls/p.pem")
        self.assertEqual(lint.lint_documents(docs, "test.yaml"), [])

    def test_cronjob_concurrency(self):
        docs = good()
        del obj(docs, "CronJob", "petkv-backup")["spec"]["concurrencyPolicy"]
        self.assertFinding(docs, "cronjob/petkv-backup: concurrencyPolicy must be Forbid")

    def test_service_links_into_petkv_env(self):
        docs = good()
        del sts_pod(docs)["enableServiceLinks"]
        obj(docs, "CronJob", "petkv-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["enableServiceLinks"] = True
        self.assertFinding(
            docs,
            "statefulset/petkv: enableServiceLinks is not false: Service service/petkv would inject PETKV_PORT",
            "cronjob/petkv-backup: enableServiceLinks is not false",
        )
        # The headless Service injects nothing.
        self.assertFalse(any("service/petkv-peers" in f for f in lint.lint_documents(docs, "t")))

    def test_main_exit_status(self):
        import io
        import tempfile
        from contextlib import redirect_stdout

        with tempfile.TemporaryDirectory() as tmp:
            ok = Path(tmp, "ok.yaml")
            ok.write_text(GOOD)
            docs = good()
            obj(docs, "Service", "petkv")["spec"]["selector"] = {"app": "x"}
            bad = Path(tmp, "bad.yaml")
            bad.write_text(yaml.safe_dump_all(docs))
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertEqual(lint.main([str(ok)]), 0)
                self.assertEqual(lint.main([str(ok), str(bad)]), 1)
            self.assertIn(f"{bad}: service/petkv: selector {{app=x}} selects no pod template", out.getvalue())


class RealBaseTest(unittest.TestCase):
    def rendered_base(self) -> list[dict]:
        path = os.environ.get("PETKV_RENDERED_BASE")
        if path:
            text = Path(path).read_text(encoding="utf-8")
        elif shutil.which("kubectl"):
            text = subprocess.run(
                ["kubectl", "kustomize", str(REPO / "deploy" / "base")], check=True, capture_output=True, text=True
            ).stdout
        else:
            self.skipTest("no PETKV_RENDERED_BASE and no kubectl to render deploy/base")
        return [d for d in yaml.safe_load_all(text) if d]

    def test_real_base_has_no_findings(self):
        docs = self.rendered_base()
        self.assertEqual(lint.lint_documents(docs, "base.yaml"), [])
        # And it is the base, not an empty render.
        kinds = {d["kind"] for d in docs}
        self.assertTrue({"StatefulSet", "Service", "Role", "RoleBinding", "CronJob"} <= kinds, kinds)

    def test_real_base_breaks_when_selector_drifts(self):
        docs = self.rendered_base()
        labels = obj(docs, "StatefulSet", "petkv")["spec"]["template"]["metadata"]["labels"]
        labels["app.kubernetes.io/component"] = "server"
        findings = lint.lint_documents(docs, "base.yaml")
        for ref in ("service/petkv:", "service/petkv-peers:", "poddisruptionbudget/petkv:", "networkpolicy/petkv:", "statefulset/petkv:"):
            self.assertTrue(any(ref in f for f in findings), f"no finding for {ref}: {findings}")


if __name__ == "__main__":
    unittest.main()
