"""Tests of deploy/check/lint.py: each broken manifest must produce its finding, and the real
rendered base must produce none.

Run: python3 -m unittest discover -s deploy/check   (stdlib + PyYAML)
The real-base test renders deploy/base with `kubectl kustomize`, or reads the file named by
PETKV_RENDERED_BASE (scripts/check-deploy.sh passes its render); without either it is skipped.
The real-restore tests read deploy/<overlay> and deploy/restore/<overlay> renders from
PETKV_RENDERED_DIR (check-deploy's target/deploy-rendered), or render them with the kubectl
named by PETKV_KUBECTL or found on PATH; the restore-overlay test needs that kubectl.
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
          volumeMounts: [{name: data, mountPath: /var/lib/petkv}]
  volumeClaimTemplates:
    - metadata: {name: data, labels: {app: petkv}}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
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


# A restore render that passes against GOOD: what deploy/restore/<overlay> renders.
GOOD_RESTORE = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-petkv-0, namespace: ns, labels: {app: petkv}}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: petkv-restore, namespace: ns}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: petkv-restore}}
    spec:
      restartPolicy: Never
      enableServiceLinks: false
      containers:
        - name: restore
          image: ghcr.io/petkv/petkv:0.1.0
          args: [restore, --from, /backups/b.snap, --data-dir, /var/lib/petkv, --hostname, petkv-0, --if-empty]
          volumeMounts:
            - {name: data, mountPath: /var/lib/petkv}
            - {name: backups, mountPath: /backups, readOnly: true}
      volumes:
        - {name: data, persistentVolumeClaim: {claimName: data-petkv-0}}
        - {name: backups, persistentVolumeClaim: {claimName: petkv-backups, readOnly: true}}
"""

# A restore as an overlay of the set: the base with one replica and `petkv restore` as the set's
# first init container. Applied to a running set it shrinks the set; for a kind set it runs the
# registry image in no namespace. The lint must refuse it.
RESTORE_AS_AN_OVERLAY = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - BASE
images:
  - name: ghcr.io/petkv/petkv
    newTag: 0.1.0
patches:
  - target:
      kind: StatefulSet
      name: petkv
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 1
      - op: add
        path: /spec/template/spec/initContainers/0
        value:
          name: restore
          image: ghcr.io/petkv/petkv
          args: [restore, --from, /backups/BACKUP-FILE-NAME, --data-dir, /var/lib/petkv, --if-empty]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: data
              mountPath: /var/lib/petkv
            - name: backups
              mountPath: /backups
              readOnly: true
      - op: add
        path: /spec/template/spec/volumes
        value:
          - name: backups
            persistentVolumeClaim:
              claimName: petkv-backups
              readOnly: true
  - target:
      kind: CronJob
      name: petkv-backup
    patch: |-
      - op: add
        path: /spec/suspend
        value: true
"""

RESTORED_OVERLAYS = ("base", "kind", "tls", "auth")


def good() -> list[dict]:
    return [d for d in yaml.safe_load_all(GOOD) if d]


def good_restore() -> list[dict]:
    return [d for d in yaml.safe_load_all(GOOD_RESTORE) if d]


def restore_pod(docs: list[dict]) -> dict:
    return obj(docs, "Job", "petkv-restore")["spec"]["template"]["spec"]


def kubectl() -> str | None:
    return os.environ.get("PETKV_KUBECTL") or shutil.which("kubectl")


def render(directory: Path) -> list[dict]:
    exe = kubectl()
    if exe is None:
        raise unittest.SkipTest(f"no kubectl to render {directory}")
    text = subprocess.run([exe, "kustomize", str(directory)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(overlay: str) -> list[dict]:
    """deploy/<overlay> as check-deploy rendered it (restore/kind: restore-kind.yaml), or now."""
    out = os.environ.get("PETKV_RENDERED_DIR")
    if out:
        path = Path(out, overlay.replace("/", "-") + ".yaml")
        if path.exists():
            return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return render(REPO / "deploy" / overlay)


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


class RestoreLintTest(unittest.TestCase):
    def findings(self, restore: list[dict], set_docs: list[dict] | None = None) -> list[str]:
        out = lint.lint_documents(restore, "restore.yaml")
        return out + lint.lint_restore_against(restore, set_docs if set_docs is not None else good(), "restore.yaml", "set.yaml")

    def assertFinding(self, findings: list[str], *expected: str) -> None:
        for text in expected:
            self.assertTrue(
                any(text in f for f in findings),
                f"expected a finding containing {text!r}, got:\n" + "\n".join(findings or ["(none)"]),
            )

    def test_good_restore_passes(self):
        self.assertEqual(self.findings(good_restore()), [])

    def test_image_pull_policy_and_namespace_of_the_set(self):
        # What deploy/restore rendered for a kind set: the registry image, the default pull
        # policy, no namespace.
        docs = good()
        obj(docs, "StatefulSet", "petkv")["metadata"]["namespace"] = "petkv"
        c = serve(docs)
        c["image"], c["imagePullPolicy"] = "localhost/petkv:dev-kind", "Never"
        restore = good_restore()
        for d in restore:
            d["metadata"]["namespace"] = "ns"
        self.assertFinding(
            self.findings(restore, docs),
            "job/petkv-restore: namespace 'ns' is not the set's 'petkv'",
            "persistentvolumeclaim/data-petkv-0: namespace 'ns' is not the set's 'petkv'",
            "container restore: image 'ghcr.io/petkv/petkv:0.1.0' is not the set's 'localhost/petkv:dev-kind'",
            "container restore: imagePullPolicy IfNotPresent is not the set's Never",
        )

    def test_effective_pull_policy(self):
        self.assertEqual(lint.effective_pull_policy({"image": "a/b:1"}), "IfNotPresent")
        self.assertEqual(lint.effective_pull_policy({"image": "a/b:latest"}), "Always")
        self.assertEqual(lint.effective_pull_policy({"image": "localhost:5000/b"}), "Always")
        self.assertEqual(lint.effective_pull_policy({"image": "a/b@sha256:00"}), "IfNotPresent")
        self.assertEqual(lint.effective_pull_policy({"image": "a/b:1", "imagePullPolicy": "Never"}), "Never")
        # Said or defaulted, the same policy is no finding.
        restore = good_restore()
        restore_pod(restore)["containers"][0]["imagePullPolicy"] = "IfNotPresent"
        self.assertEqual(self.findings(restore), [])

    def test_pod_settings_of_the_set(self):
        docs = good()
        sts_pod(docs)["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532}
        sts_pod(docs)["nodeSelector"] = {"disk": "ssd"}
        serve(docs)["securityContext"] = {"readOnlyRootFilesystem": True}
        self.assertFinding(
            self.findings(good_restore(), docs),
            "pod securityContext None is not the set's {'runAsNonRoot': True",
            "pod nodeSelector None is not the set's {'disk': 'ssd'}",
            "container restore: securityContext is not the set's container's",
        )

    def test_restore_in_the_sets_own_pods(self):
        docs = good()
        sts = obj(docs, "StatefulSet", "petkv")
        sts["spec"]["replicas"] = 1
        sts_pod(docs)["initContainers"].insert(
            0, {"name": "restore", "image": "ghcr.io/petkv/petkv:0.1.0", "args": ["restore", "--from", "/backups/b.snap", "--if-empty"]}
        )
        self.assertFinding(lint.lint_documents(docs, "t.yaml"), "statefulset/petkv: container restore runs `petkv restore` in the set's own pods")

    def test_a_restore_render_holds_no_statefulset(self):
        restore = good_restore() + [obj(good(), "StatefulSet", "petkv")]
        self.assertFinding(lint.lint_documents(restore, "r.yaml"), "r.yaml: statefulset/petkv: a render that restores must not hold a StatefulSet")

    def test_the_claim_is_the_sets(self):
        restore = good_restore()
        pvc = obj(restore, "PersistentVolumeClaim", "data-petkv-0")
        pvc["spec"]["resources"]["requests"]["storage"] = "2Gi"
        pvc["metadata"]["labels"] = {"app": "petkv", "extra": "x"}
        self.assertFinding(
            self.findings(restore),
            "persistentvolumeclaim/data-petkv-0: spec is not the set's volumeClaimTemplate 'data'",
            "persistentvolumeclaim/data-petkv-0: labels {app=petkv, extra=x} are not the set's volumeClaimTemplate's {app=petkv}",
        )

    def test_the_claim_is_created(self):
        restore = [d for d in good_restore() if d["kind"] != "PersistentVolumeClaim"]
        self.assertFinding(self.findings(restore), "the render does not create claim 'data-petkv-0'")

    def test_the_claim_is_the_one_of_the_hostname(self):
        restore = good_restore()
        restore_pod(restore)["volumes"][0]["persistentVolumeClaim"]["claimName"] = "data-petkv-1"
        self.assertFinding(
            self.findings(restore),
            "--data-dir /var/lib/petkv is claim 'data-petkv-1', which is not the volume of petkv-0",
            "stages on claim 'data-petkv-1', which is none of petkv-0's claims (data-petkv-0",
        )

    def test_the_data_dir_is_a_claim(self):
        restore = good_restore()
        c = restore_pod(restore)["containers"][0]
        c["args"][c["args"].index("--data-dir") + 1] = "/data"
        self.assertFinding(self.findings(restore), "--data-dir /data is not the mount of a volume claim")

    def test_hostname(self):
        restore = good_restore()
        c = restore_pod(restore)["containers"][0]
        i = c["args"].index("--hostname")
        c["args"][i + 1] = "petkv-1"
        self.assertFinding(lint.lint_documents(restore, "r"), "--hostname 'petkv-1' is not ordinal 0")
        del c["args"][i : i + 2]
        self.assertFinding(lint.lint_documents(restore, "r"), "`petkv restore` without --hostname")
        c["env"] = [{"name": "PETKV_HOSTNAME", "value": "petkv-0"}]
        self.assertEqual(self.findings(restore), [])

    def test_a_refusal_is_not_retried(self):
        restore = good_restore()
        job = obj(restore, "Job", "petkv-restore")
        del job["spec"]["backoffLimit"]
        job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        self.assertFinding(
            lint.lint_documents(restore, "r"),
            "job/petkv-restore: backoffLimit is 6: a refused restore would be retried 6 times",
            "restartPolicy is 'OnFailure', not Never",
        )

    def test_backups_read_only(self):
        restore = good_restore()
        del restore_pod(restore)["containers"][0]["volumeMounts"][1]["readOnly"]
        self.assertFinding(lint.lint_documents(restore, "r"), "the backups (/backups) are mounted writable")

    def test_another_set(self):
        docs = good()
        obj(docs, "StatefulSet", "petkv")["metadata"]["name"] = "kv"
        self.assertFinding(self.findings(good_restore(), docs), "restores into set 'petkv' (--hostname 'petkv-0'), which set.yaml does not hold")

    def test_main_with_restore_pairs(self):
        import io
        import tempfile
        from contextlib import redirect_stdout

        with tempfile.TemporaryDirectory() as tmp:
            set_file, ok, bad = Path(tmp, "set.yaml"), Path(tmp, "r.yaml"), Path(tmp, "bad.yaml")
            set_file.write_text(GOOD)
            ok.write_text(GOOD_RESTORE)
            docs = good_restore()
            restore_pod(docs)["containers"][0]["image"] = "ghcr.io/petkv/petkv:0.0.9"
            bad.write_text(yaml.safe_dump_all(docs))
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertEqual(lint.main([str(set_file), "--restore", str(ok), str(set_file)]), 0)
                self.assertEqual(lint.main(["--restore", str(bad), str(set_file)]), 1)
            self.assertIn(f"{bad}: job/petkv-restore: container restore: image 'ghcr.io/petkv/petkv:0.0.9' is not the set's", out.getvalue())


class RealRestoreTest(unittest.TestCase):
    """deploy/restore/<overlay> as rendered, against deploy/<overlay>."""

    def test_every_overlay_has_a_restore_that_matches_it(self):
        for overlay in RESTORED_OVERLAYS:
            with self.subTest(overlay=overlay):
                restore, set_docs = rendered(f"restore/{overlay}"), rendered(overlay)
                self.assertEqual(lint.lint_documents(restore, f"restore-{overlay}.yaml"), [])
                self.assertEqual(lint.lint_restore_against(restore, set_docs, f"restore-{overlay}.yaml", f"{overlay}.yaml"), [])
                # Only the Job and the claim: nothing of the set, nothing shared with it.
                self.assertEqual(
                    sorted((d["kind"], d["metadata"]["name"]) for d in restore),
                    [("Job", "petkv-restore"), ("PersistentVolumeClaim", "data-petkv-0")],
                )
                sts = obj(set_docs, "StatefulSet", "petkv")
                for d in restore:
                    self.assertEqual(d["metadata"].get("namespace"), sts["metadata"].get("namespace"), d["kind"])
                    self.assertNotIn("petkv-restore/keep", d["metadata"].get("annotations") or {})

    def test_the_restore_of_one_overlay_does_not_fit_another(self):
        # The check compares for real: kind's restore (local image, never pulled, namespace
        # petkv) against the base's set.
        findings = lint.lint_restore_against(rendered("restore/kind"), rendered("base"), "restore-kind.yaml", "base.yaml")
        for text in ("namespace 'petkv' is not the set's '(none)'", "image 'localhost/petkv:dev-kind'", "imagePullPolicy Never"):
            self.assertTrue(any(text in f for f in findings), f"{text!r} not in {findings}")

    def test_a_restore_overlay_of_the_set_fails(self):
        import tempfile

        if kubectl() is None:
            self.skipTest("no kubectl to render the restore overlay")
        (REPO / "target").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=REPO / "target") as tmp:
            base = os.path.relpath(REPO / "deploy" / "base", tmp)
            Path(tmp, "kustomization.yaml").write_text(RESTORE_AS_AN_OVERLAY.replace("BASE", base), encoding="utf-8")
            overlay = render(Path(tmp))
        findings = lint.lint_documents(overlay, "overlay.yaml") + lint.lint_restore_against(overlay, rendered("kind"), "overlay.yaml", "kind.yaml")
        for text in (
            "statefulset/petkv: container restore runs `petkv restore` in the set's own pods",
            "namespace '(none)' is not the set's 'petkv'",
            "image 'ghcr.io/petkv/petkv:0.1.0' is not the set's 'localhost/petkv:dev-kind'",
            "imagePullPolicy IfNotPresent is not the set's Never",
        ):
            self.assertTrue(any(text in f for f in findings), f"{text!r} not in:\n" + "\n".join(findings))


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
