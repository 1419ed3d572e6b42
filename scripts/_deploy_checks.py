"""Structural checks of deploy/ that the generic linters cannot do; used by scripts/check-deploy-manifests.

    python scripts/_deploy_checks.py k8s-core-files   # print the manifests kubernetes-validate must check
    python scripts/_deploy_checks.py k8s              # CRDs, kustomizations, cross-references, hardening
    python scripts/_deploy_checks.py compose          # deploy/compose/docker-compose.yml and .env.example
    python scripts/_deploy_checks.py configs          # backupctl accepts the example configurations
    python scripts/_deploy_checks.py dockerfile       # the Dockerfile pins what it installs

Each check prints one line per problem and exits 1 if there was any.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
COMPOSE_DIR = REPO / "deploy" / "compose"

UID = 10001
TMP = "/tmp"  # noqa: S108  (the path the manifests must mount an emptyDir on, not a file we use)
DURATION = re.compile(r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$")
SECRET_KEY = re.compile(r"PASSWORD|KEY|TOKEN|SECRET|URI|CONNECTION_STRING", re.IGNORECASE)
PLACEHOLDER = "CHANGE_ME"
# Azurite's published development key: the one "secret" allowed in examples (it only opens the emulator).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CRD_GROUPS = {"monitoring.coreos.com"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

Doc = dict[str, Any]


class Problems:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, where: object, message: str) -> None:
        self.count += 1
        print(f"ERROR {where}: {message}", file=sys.stderr, flush=True)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def load_docs(path: Path, problem: Problems) -> list[Doc]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        problem(rel(path), f"cannot load: {exc}")
        return []
    good = []
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            problem(rel(path), "a document without apiVersion and kind")
        else:
            good.append(doc)
    return good


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def group_of(doc: Doc) -> str:
    api = str(doc["apiVersion"])
    return api.split("/", 1)[0] if "/" in api else ""


def is_kustomization(doc: Doc) -> bool:
    return group_of(doc) == "kustomize.config.k8s.io"


def is_core(doc: Doc) -> bool:
    """Whether kubernetes-validate ships a schema for it (built-in API groups)."""
    group = group_of(doc)
    if is_kustomization(doc):
        return False
    return group == "" or "." not in group or group.endswith(".k8s.io")


def name(doc: Doc) -> str:
    return f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"


def k8s_core_files() -> int:
    problem = Problems()
    for path in manifests():
        docs = load_docs(path, problem)
        for doc in docs:
            if not (is_core(doc) or is_kustomization(doc) or group_of(doc) in CRD_GROUPS):
                problem(rel(path), f"{name(doc)} ({doc['apiVersion']}) has neither a schema nor a structural check")
        if any(is_core(d) for d in docs):
            print(rel(path))
    return 1 if problem.count else 0


# --- Kubernetes: structure of CRDs and kustomizations -----------------------------------------------------


def check_labels_map(where: str, value: Any, what: str, problem: Problems) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        problem(where, f"{what} must map strings to strings")


def check_prometheus_rule(where: str, doc: Doc, problem: Problems) -> None:
    groups = (doc.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        problem(where, "spec.groups must be a non-empty list")
        return
    seen: set[str] = set()
    for gi, group in enumerate(groups):
        at = f"{where} spec.groups[{gi}]"
        if not isinstance(group, dict):
            problem(at, "must be a mapping")
            continue
        unknown = set(group) - {"name", "rules", "interval", "limit", "partial_response_strategy", "query_offset"}
        if unknown:
            problem(at, f"unknown keys {sorted(unknown)}")
        gname = group.get("name")
        if not isinstance(gname, str) or not gname:
            problem(at, "name is required")
        elif gname in seen:
            problem(at, f"duplicate group name {gname!r}")
        else:
            seen.add(gname)
        for key in ("interval", "query_offset"):
            if key in group and not DURATION.match(str(group[key])):
                problem(at, f"{key} {group[key]!r} is not a duration")
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            problem(at, "rules must be a non-empty list")
            continue
        for ri, rule in enumerate(rules):
            rat = f"{at}.rules[{ri}]"
            if not isinstance(rule, dict):
                problem(rat, "must be a mapping")
                continue
            unknown = set(rule) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if unknown:
                problem(rat, f"unknown keys {sorted(unknown)}")
            if ("alert" in rule) == ("record" in rule):
                problem(rat, "needs exactly one of alert and record")
            if "record" in rule and ({"for", "keep_firing_for", "annotations"} & set(rule)):
                problem(rat, "a recording rule takes no for, keep_firing_for or annotations")
            if not isinstance(rule.get("expr"), str | int) or not str(rule.get("expr")).strip():
                problem(rat, "expr is required")
            for key in ("for", "keep_firing_for"):
                if key in rule and not DURATION.match(str(rule[key])):
                    problem(rat, f"{key} {rule[key]!r} is not a duration")
            check_labels_map(rat, rule.get("labels"), "labels", problem)
            check_labels_map(rat, rule.get("annotations"), "annotations", problem)


ENDPOINT_KEYS = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "honorTimestamps",
    "trackTimestampsStaleness", "relabelings", "metricRelabelings", "params", "bearerTokenSecret",
    "authorization", "basicAuth", "oauth2", "tlsConfig", "followRedirects", "enableHttp2", "proxyUrl",
    "filterRunning", "bearerTokenFile",
}


def check_monitor(where: str, doc: Doc, problem: Problems) -> None:
    spec = doc.get("spec") or {}
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problem(where, "spec.selector needs matchLabels or matchExpressions")
    key = "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    endpoints = spec.get(key)
    if not isinstance(endpoints, list) or not endpoints:
        problem(where, f"spec.{key} must be a non-empty list")
        return
    for i, endpoint in enumerate(endpoints):
        at = f"{where} spec.{key}[{i}]"
        if not isinstance(endpoint, dict):
            problem(at, "must be a mapping")
            continue
        unknown = set(endpoint) - ENDPOINT_KEYS - {"portNumber"}
        if unknown:
            problem(at, f"unknown keys {sorted(unknown)}")
        if not (endpoint.get("port") or endpoint.get("targetPort") or endpoint.get("portNumber")):
            problem(at, "needs a port")
        for dkey in ("interval", "scrapeTimeout"):
            if dkey in endpoint and not DURATION.match(str(endpoint[dkey])):
                problem(at, f"{dkey} {endpoint[dkey]!r} is not a duration")


def check_kustomization(path: Path, doc: Doc, problem: Problems) -> None:
    for entry in doc.get("resources") or []:
        target = path.parent / str(entry)
        if not target.exists():
            problem(rel(path), f"resource {entry!r} does not exist")
        elif "example" in target.name:
            problem(rel(path), f"resource {entry!r} is an example with placeholders: apply it by hand")


# --- Kubernetes: workloads, hardening and cross-references ------------------------------------------------


def pod_template(doc: Doc) -> tuple[Doc, Doc] | None:
    """(pod metadata, pod spec) of a workload."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return doc.get("metadata") or {}, spec
    if doc["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def selects(selector: dict[str, Any] | None, labels: dict[str, Any] | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in (selector or {}).items())


def check_container(where: str, pod: Doc, container: Doc, claims: set[str], problem: Problems) -> None:
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    if effective("runAsNonRoot") is not True:
        problem(where, "runAsNonRoot must be true")
    if effective("runAsUser") != UID:
        problem(where, f"runAsUser must be {UID}")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(where, "capabilities must drop ALL")
    if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "seccompProfile must be RuntimeDefault")
    volumes: dict[str, Doc] = {v.get("name"): v for v in pod.get("volumes") or []}
    tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == TMP]
    if not tmp or "emptyDir" not in volumes.get(tmp[0].get("name"), {}):
        problem(where, "needs an emptyDir mounted at /tmp (the root filesystem is read-only)")
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in volumes and mount.get("name") not in claims:
            problem(where, f"volumeMount {mount.get('name')!r} has no volume")
    resources = container.get("resources") or {}
    if not (resources.get("requests") or {}).get("memory") or not (resources.get("limits") or {}).get("memory"):
        problem(where, "needs memory requests and limits")


def check_backup_container(where: str, container: Doc, problem: Problems) -> None:
    # Resource values get tuned from benchmarks: only their presence is checked (see check_container).
    args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if "daemon" in args:
        # A sidecar's readiness may be /healthz: a storage outage must not make the database pod unready.
        for probe, paths in (("livenessProbe", ("/healthz",)), ("readinessProbe", ("/readyz", "/healthz"))):
            http = (container.get(probe) or {}).get("httpGet") or {}
            port = http.get("port")
            if http.get("path") not in paths or (ports.get(port) if isinstance(port, str) else port) != 9868:
                problem(where, f"{probe} must be GET {' or '.join(paths)} on port 9868")
    elif "run-now" not in args:
        problem(where, "runs neither `daemon` nor `run-now`")


def check_workload(where: str, doc: Doc, objects: dict[str, set[str]], problem: Problems) -> None:
    meta, pod = pod_template(doc) or ({}, {})
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True or (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "pod securityContext needs runAsNonRoot: true and seccompProfile RuntimeDefault")
    labels = meta.get("labels") or {}
    selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels")
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"} and not selects(selector, labels):
        problem(where, "spec.selector does not match the pod template labels")
    templates = (doc.get("spec") or {}).get("volumeClaimTemplates") or []
    claims = {str((c.get("metadata") or {}).get("name")) for c in templates}
    for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        at = f"{where} container {container.get('name')}"
        check_container(at, pod, container, claims, problem)
        if "backup-exporter" in str(container.get("image", "")):
            check_backup_container(at, container, problem)
        for source in container.get("envFrom") or []:
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                ref = (source.get(key) or {}).get("name")
                if ref and ref not in objects[kind] and not (source.get(key) or {}).get("optional"):
                    problem(at, f"{key} {ref!r}: no {kind} of that name in this directory")
    for volume in pod.get("volumes") or []:
        ref = (volume.get("configMap") or {}).get("name")
        if ref and ref not in objects["ConfigMap"]:
            problem(where, f"volume {volume.get('name')!r}: no ConfigMap {ref!r} in this directory")
    if doc["kind"] == "CronJob":
        spec = doc.get("spec") or {}
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        if spec.get("concurrencyPolicy") != "Forbid":
            problem(where, "concurrencyPolicy must be Forbid")
        if job.get("backoffLimit") not in (1, 2):
            problem(where, "jobTemplate.spec.backoffLimit must be 1 or 2")
        if not job.get("activeDeadlineSeconds"):
            problem(where, "jobTemplate.spec.activeDeadlineSeconds is required")
        for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
            if key not in spec:
                problem(where, f"{key} is required")


def check_secret(where: str, doc: Doc, problem: Problems) -> None:
    if doc.get("data"):
        problem(where, "example Secrets use stringData (readable placeholders), not data")
    for key, value in (doc.get("stringData") or {}).items():
        if SECRET_KEY.search(key) and PLACEHOLDER not in str(value):
            problem(where, f"{key} must be a {PLACEHOLDER} placeholder, never a real value")


def check_service_wiring(where: str, docs: list[Doc], problem: Problems) -> None:
    """Services select pods whose named ports exist; monitors select Services with their port."""
    pods = [pt for d in docs if d["kind"] in WORKLOADS and (pt := pod_template(d))]
    services = [d for d in docs if d["kind"] == "Service"]
    for service in services:
        spec = service.get("spec") or {}
        matched = [pod for meta, pod in pods if selects(spec.get("selector"), meta.get("labels"))]
        if not matched:
            problem(f"{where} {name(service)}", "selector matches no pod template in this directory")
            continue
        names = {p.get("name") for pod in matched for c in pod.get("containers") or [] for p in c.get("ports") or []}
        for port in spec.get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                problem(f"{where} {name(service)}", f"targetPort {target!r} is no container port name")
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        spec = monitor.get("spec") or {}
        match = (spec.get("selector") or {}).get("matchLabels")
        chosen = [s for s in services if selects(match, (s.get("metadata") or {}).get("labels"))]
        if not chosen:
            problem(f"{where} {name(monitor)}", "selector matches no Service in this directory")
        ports = {p.get("name") for s in chosen for p in (s.get("spec") or {}).get("ports") or []}
        for endpoint in spec.get("endpoints") or []:
            if endpoint.get("port") and endpoint["port"] not in ports:
                problem(f"{where} {name(monitor)}", f"endpoint port {endpoint['port']!r} is on no selected Service")


def check_k8s() -> int:
    problem = Problems()
    paths = manifests()
    if not paths:
        problem(rel(K8S), "no manifests")
    by_dir: dict[Path, list[Doc]] = {}
    for path in paths:
        for doc in load_docs(path, problem):
            where = f"{rel(path)} {name(doc)}"
            by_dir.setdefault(path.parent, []).append(doc)
            kind = doc["kind"]
            if is_kustomization(doc):
                check_kustomization(path, doc, problem)
            elif group_of(doc) in CRD_GROUPS:
                if doc["apiVersion"] != "monitoring.coreos.com/v1":
                    problem(where, "use apiVersion monitoring.coreos.com/v1")
                if not (doc.get("metadata") or {}).get("name"):
                    problem(where, "metadata.name is required")
                if kind == "PrometheusRule":
                    check_prometheus_rule(where, doc, problem)
                elif kind in {"ServiceMonitor", "PodMonitor"}:
                    check_monitor(where, doc, problem)
                else:
                    problem(where, f"no structural check for {kind}")
            elif kind == "Secret":
                check_secret(where, doc, problem)
    for directory, docs in by_dir.items():
        objects: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set()}
        for doc in docs:
            if doc["kind"] in objects:
                objects[doc["kind"]].add((doc.get("metadata") or {}).get("name", ""))
        for doc in docs:
            if doc["kind"] in WORKLOADS:
                check_workload(f"{rel(directory)} {name(doc)}", doc, objects, problem)
        check_service_wiring(rel(directory), docs, problem)
    if not problem.count:
        print(f"OK {len(paths)} manifests under {rel(K8S)}: CRDs, kustomizations, wiring and hardening")
    return 1 if problem.count else 0


# --- Compose ---------------------------------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])[^}]*)?\}")


def bind_sources(service: Doc) -> Iterator[str]:
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                yield source
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            yield str(volume.get("source", ""))


def env_example_keys(path: Path) -> tuple[dict[str, str], set[str]]:
    """(active KEY=value pairs, keys that appear only commented out) of an .env example."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            if match.group(1):
                commented.add(match.group(2))
            else:
                active[match.group(2)] = match.group(3).strip()
    return active, commented - set(active)


def check_compose() -> int:
    problem = Problems()
    path = COMPOSE_DIR / "docker-compose.yml"
    example = COMPOSE_DIR / ".env.example"
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        problem(rel(path), f"cannot load: {exc}")
        return 1
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        problem(rel(path), "no services")
        return 1
    volumes = data.get("volumes") or {}
    for sname, service in services.items():
        at = f"{rel(path)} service {sname}"
        if not isinstance(service, dict):
            problem(at, "must be a mapping")
            continue
        build = service.get("build")
        if not service.get("image") and not build:
            problem(at, "needs image or build")
        if build:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (context / dockerfile).is_file():
                problem(at, f"build: {rel(context.resolve() / dockerfile)} does not exist")
        for source in bind_sources(service):
            if not (COMPOSE_DIR / source).exists():
                problem(at, f"mounted path {source} ({rel((COMPOSE_DIR / source).resolve())}) does not exist")
        for volume in service.get("volumes") or []:
            named = volume.split(":", 1)[0] if isinstance(volume, str) else None
            if named and not named.startswith((".", "/", "~")) and named not in volumes:
                problem(at, f"named volume {named!r} is not declared under volumes")
        for env_file in service.get("env_file") or []:
            spec = env_file if isinstance(env_file, dict) else {"path": env_file}
            if spec.get("required", True) and not (COMPOSE_DIR / str(spec["path"])).exists():
                problem(at, f"env_file {spec['path']} does not exist")
        depends = service.get("depends_on") or []
        for dep in depends if isinstance(depends, list) else list(depends):
            if dep not in services:
                problem(at, f"depends_on unknown service {dep!r}")
    published: dict[str, str] = {}
    for sname, service in services.items():
        for port in service.get("ports") or []:
            host = str(port).rsplit(":", 1)[0]
            if host in published:
                problem(rel(path), f"host port {host} published by {published[host]} and {sname}")
            published[host] = sname
    if not example.is_file():
        problem(rel(example), "missing")
        return 1
    active, commented = env_example_keys(example)
    for match in VARIABLE.finditer(text):
        var, op = match.group(1), match.group(2)
        if var not in active and var not in commented:
            problem(rel(example), f"does not list {var}, which docker-compose.yml uses")
        elif op in (None, ":?", "?") and var not in active:
            problem(rel(example), f"{var} is required by docker-compose.yml: list it uncommented")
    for key, value in active.items():
        if value and SECRET_KEY.search(key) and PLACEHOLDER not in value and AZURITE_KEY not in value:
            problem(rel(example), f"{key} must be a {PLACEHOLDER} placeholder (or Azurite's published dev key)")
    if not problem.count:
        print(f"OK {rel(path)}: {len(services)} services, build contexts, mounts and .env.example")
    return 1 if problem.count else 0


# --- The example configurations, loaded by backupctl's own configuration code ---------------------------


def interpolate_compose(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        var, op = match.group(1), match.group(2) or ""
        default = match.group(0)[len(var) + 2 + len(op):-1]
        current = env.get(var, "")
        if op in (":-", "-"):
            return current or default if op == ":-" else env.get(var, default)
        return current

    return VARIABLE.sub(one, value)


def check_configs() -> int:
    sys.path.insert(0, str(REPO))
    # The project's own configuration code, imported only for this check.
    from backup_exporter import config
    from backup_exporter.core.errors import ConfigError

    problem = Problems()
    checked = 0

    def accept(where: str, env: dict[str, str]) -> None:
        nonlocal checked
        checked += 1
        try:
            cfg = config.load(None, env)
        except ConfigError as exc:
            problem(where, f"backupctl rejects it: {exc}")
            return
        if not cfg.plans:
            problem(where, "no plan")

    for directory in sorted({p.parent for p in manifests()}):
        docs = [d for p in sorted(directory.glob("*.y*ml")) for d in load_docs(p, problem)]
        secrets = {str(k): str(v) for d in docs if d["kind"] == "Secret"
                   for k, v in (d.get("stringData") or {}).items()}
        for doc in (d for d in docs if d["kind"] == "ConfigMap"):
            data = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
            where = f"{rel(directory)} {name(doc)}"
            if "config.yaml" in data:  # YAML mode (BACKUPCTL_CONFIG), ${VAR} from the Secret
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "config.yaml"
                    path.write_text(data["config.yaml"], encoding="utf-8")
                    accept(where, {**secrets, "BACKUPCTL_CONFIG": str(path)})
            elif any(k.startswith("BACKUP_") for k in data):  # environment-only mode
                accept(where, {**data, **secrets})
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text(encoding="utf-8"))
    active, _ = env_example_keys(COMPOSE_DIR / ".env.example")
    for sname, service in (compose.get("services") or {}).items():
        environment = service.get("environment") or {}
        if isinstance(environment, dict) and "MONGODB_URI" in environment:
            env = {str(k): interpolate_compose(str(v), active) for k, v in environment.items()}
            accept(f"deploy/compose service {sname}", env)
    if not checked:
        problem(rel(REPO / "deploy"), "found no example configuration to check")
    if not problem.count:
        print(f"OK backupctl accepts the {checked} example configurations (Kubernetes ConfigMaps, Compose)")
    return 1 if problem.count else 0


def dockerfile_problems(text: str, dockerignore: str) -> list[str]:
    """Return what is wrong with how the Dockerfile installs MongoDB Database Tools: the APT key must be
    pinned by a full fingerprint and checked, apt must trust that key only, the package version must be
    exact, and no hand-filled checksum placeholder may be left."""
    problems = []
    args = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text, re.MULTILINE))
    fingerprint = args.get("MONGO_APT_KEY_FINGERPRINT", "")
    if not re.fullmatch(r"[0-9A-F]{40}", fingerprint):
        problems.append(f"ARG MONGO_APT_KEY_FINGERPRINT must be a full 40-hex-digit key fingerprint, "
                        f"not {fingerprint!r}")
    if not re.search(r"openpgp_fingerprint\.py \S+ \"?\$\{MONGO_APT_KEY_FINGERPRINT\}", text):
        problems.append("the downloaded APT key is never checked against MONGO_APT_KEY_FINGERPRINT "
                        "(deploy/docker/openpgp_fingerprint.py)")
    if "!deploy/docker/openpgp_fingerprint.py" not in dockerignore:
        problems.append(".dockerignore leaves deploy/docker/openpgp_fingerprint.py out of the build context")
    if not re.search(r"deb \[signed-by=/etc/apt/keyrings/[\w.-]+\.asc\] https://repo\.mongodb\.org/", text):
        problems.append("the MongoDB APT source must be https://repo.mongodb.org/ with signed-by= the pinned key")
    version = args.get("MONGO_TOOLS_VERSION", "")
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
        problems.append(f"ARG MONGO_TOOLS_VERSION must be an exact version like 100.8.0, not {version!r}")
    if not re.search(r'apt-get install [^\n]*"?mongodb-database-tools=\$\{MONGO_TOOLS_VERSION\}"?', text):
        problems.append("apt-get must install mongodb-database-tools=${MONGO_TOOLS_VERSION} (a pinned version)")
    if re.search(r"SHA256=FILL|FILL_IN|MONGO_TOOLS_SHA256|CHANGE_ME", text):
        problems.append("a hand-filled checksum placeholder is left in the Dockerfile")
    return problems


def check_dockerfile() -> int:
    problem = Problems()
    dockerfile = REPO / "Dockerfile"
    for message in dockerfile_problems(dockerfile.read_text(encoding="utf-8"),
                                       (REPO / ".dockerignore").read_text(encoding="utf-8")):
        problem(rel(dockerfile), message)
    if not problem.count:
        print("OK Dockerfile pins MongoDB's APT key by fingerprint and mongodb-database-tools by version")
    return 1 if problem.count else 0


def main(argv: list[str]) -> int:
    commands = {"k8s-core-files": k8s_core_files, "k8s": check_k8s, "compose": check_compose,
                "configs": check_configs, "dockerfile": check_dockerfile}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: {Path(__file__).name} {{{'|'.join(commands)}}}", file=sys.stderr)
        return 64
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
