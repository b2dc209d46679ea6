#!/usr/bin/env python3
"""Validates deploy/ without a cluster (scripts/deploy-check.sh runs it; CI too).

1. Generates every overlay's keys and configs with the real `nacre` (deploy/generate.sh, in a
   copy of deploy/, so a checkout's own generated/ is never touched) and renders the overlays
   with kubectl's kustomize.
2. Validates every rendered object with kubernetes-validate, strict, against Kubernetes
   KUBERNETES_VERSION. Custom resources it has no schema for (ServiceMonitor, Certificate) get a
   structural check here instead; any other kind without a schema fails.
3. Checks the rendered objects: every Secret and ConfigMap reference (env, envFrom, volumes,
   ServiceMonitor credentials) resolves to an object of that namespace holding that key; no
   container is privileged, adds a capability or may escalate without a stated reason
   (`nacre.dev/privileged-reason.<container>`), none runs as root without one
   (`nacre.dev/root-reason.<container>`), every container drops ALL capabilities and sets
   requests; Services and PodDisruptionBudgets select pods that exist; every object names a
   namespace the manifests create; each pod would be admitted by the Pod Security level its
   namespace enforces (restricted for the service and the witness).
4. Runs each Nacre container of the rendered overlays as its pod would run it: its ConfigMaps
   and Secrets written at their mount paths (with their modes) under a scratch root, its env
   resolved from them, its command with `nacre` replaced by the built binary. Only what cannot
   exist here is rewritten, and said: the listen address moves from 0.0.0.0 to a free loopback
   port, the container's absolute paths gain the scratch root, and the database URL's host is a
   local PostgreSQL (with TLS and sslmode=verify-full for managed-db). Then every probe is run:
   an httpGet probe must answer 200 on that route of the real server (and an unknown route 404,
   so the check can fail), an exec probe must exit 0.
Each check is also run on a broken copy of the objects, which it must refuse.
"""

import argparse
import base64
import copy
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ["example", "example-witness", "managed-db"]
# Custom resources kubernetes-validate has no schema for, and the fields this check requires.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
    ("cert-manager.io/v1", "Certificate"): ["spec.secretName", "spec.issuerRef.name"],
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
NACRE_IMAGES = ("nacre:", "nacre-host:")

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL  {msg}", flush=True)


def ok(msg):
    print(f"ok    {msg}", flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return r


def dig(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def name_of(doc):
    return f"{doc['kind']}/{doc['metadata'].get('namespace', '-')}/{doc['metadata']['name']}"


# ---------------------------------------------------------------- rendering and validation


def generate(deploy, nacre, work, pg_ca):
    """Copies deploy/ to WORK and generates every overlay's inputs there."""
    shutil.copytree(deploy, work, ignore=shutil.ignore_patterns("generated"))
    env = dict(os.environ, NACRE=nacre)
    run([f"{work}/generate.sh", "example"], env=env)
    wgen = f"{work}/overlays/example-witness/generated"
    run(
        [
            f"{work}/generate.sh",
            "managed-db",
            "--database-url",
            "postgres://nacre@db.example.invalid:5432/nacre?sslmode=verify-full&sslrootcert=/nacre/db-ca/ca.crt",
            "--database-ca",
            pg_ca,
            "--witness-url",
            "https://nacre-witness.nacre-witness.svc:8444",
            "--witness-vkey",
            open(f"{wgen}/witness.vkey").read().strip(),
            "--witness-ca",
            f"{wgen}/ca.crt",
        ],
        env=env,
    )


def render(kubectl, overlay_dir):
    out = run([kubectl, "kustomize", overlay_dir]).stdout
    return out, [d for d in yaml.safe_load_all(out) if d]


def validate(validator, path, docs):
    """kubernetes-validate, strict; custom resources checked structurally."""
    out = subprocess.run(
        [validator, "--strict", "-k", KUBERNETES_VERSION, path], text=True, capture_output=True
    )
    passed = 0
    for line in (out.stdout + out.stderr).splitlines():
        if " passed for resource " in line:
            passed += 1
        elif line.startswith("WARN") and "Couldn't find schema for kind" in line:
            m = re.search(r"kind (\S+) with api version (\S+)", line)
            if not m or (m.group(2), m.group(1)) not in CUSTOM:
                fail(f"{path}: {line}")
        elif line.strip():
            fail(f"{path}: {line}")
    custom = 0
    for d in docs:
        fields = CUSTOM.get((d["apiVersion"], d["kind"]))
        if fields is not None:
            custom += 1
            for f in fields:
                if dig(d, f) in (None, "", [], {}):
                    fail(f"{name_of(d)}: {f} is missing")
    if passed + custom != len(docs):
        fail(f"{path}: {passed} objects validated and {custom} custom resources of {len(docs)}")
    return passed, custom


# ---------------------------------------------------------------- static checks


def pod_templates(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]


def provided(docs):
    """(kind, namespace, name) -> the keys it holds. cert-manager Certificates provide their
    Secret (tls.crt, tls.key, ca.crt)."""
    have = {}
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] in ("Secret", "ConfigMap"):
            keys = set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
            keys |= set((d.get("binaryData") or {}).keys())
            have[(d["kind"], ns, d["metadata"]["name"])] = keys
        elif d["kind"] == "Certificate":
            have[("Secret", ns, d["spec"]["secretName"])] = {"tls.crt", "tls.key", "ca.crt"}
    return have


def references(docs):
    """Every (where, kind, namespace, name, key or None) reference to a Secret or ConfigMap."""
    for d, tpl in pod_templates(docs):
        ns, spec = d["metadata"].get("namespace"), tpl["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name_of(d)} container {c['name']}"
            for e in c.get("env", []):
                vf = e.get("valueFrom") or {}
                for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    if field in vf and not vf[field].get("optional"):
                        yield where, kind, ns, vf[field]["name"], vf[field]["key"]
            for ef in c.get("envFrom", []):
                for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                    if field in ef and not ef[field].get("optional"):
                        yield where, kind, ns, ef[field]["name"], None
        for v in spec.get("volumes", []):
            where = f"{name_of(d)} volume {v['name']}"
            for field, kind, key in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
                src = v.get(field)
                if src and not src.get("optional"):
                    items = src.get("items") or [None]
                    for it in items:
                        yield where, kind, ns, src[key], it and it["key"]
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            ns = d["metadata"].get("namespace")
            for ep in d["spec"]["endpoints"]:
                cred = dig(ep, "authorization.credentials")
                if cred:
                    yield name_of(d), "Secret", ns, cred["name"], cred["key"]
                for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    ref = dig(ep, f"tlsConfig.ca.{field}")
                    if ref:
                        yield name_of(d), kind, ns, ref["name"], ref["key"]


def check_references(docs):
    have, bad, n = provided(docs), [], 0
    for where, kind, ns, name, key in references(docs):
        n += 1
        keys = have.get((kind, ns, name))
        if keys is None:
            bad.append(f"{where}: {kind} {ns}/{name} does not exist")
        elif key is not None and key not in keys:
            bad.append(f"{where}: {kind} {ns}/{name} has no key {key!r} (it has {sorted(keys)})")
    return n, bad


def check_privilege(docs):
    bad = []
    for d, tpl in pod_templates(docs):
        spec, notes = tpl["spec"], tpl["metadata"].get("annotations") or {}
        psc = spec.get("securityContext") or {}
        for key in ("hostPID", "hostIPC", "hostNetwork"):
            if spec.get(key):
                bad.append(f"{name_of(d)}: {key} (no Nacre pod needs it)")
        for c in spec.get("initContainers", []) + spec["containers"]:
            where, sc = f"{name_of(d)} container {c['name']}", c.get("securityContext") or {}
            caps = sc.get("capabilities") or {}
            raised = []
            if sc.get("privileged"):
                raised.append("privileged")
            if caps.get("add"):
                raised.append(f"adds {caps['add']}")
            if sc.get("allowPrivilegeEscalation") is not False and not sc.get("privileged"):
                raised.append("allowPrivilegeEscalation is not false")
            if raised and not notes.get(f"nacre.dev/privileged-reason.{c['name']}", "").strip():
                bad.append(f"{where}: {', '.join(raised)} without a stated reason")
            if not sc.get("privileged") and "ALL" not in (caps.get("drop") or []):
                bad.append(f"{where}: does not drop ALL capabilities")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            root = uid == 0 or (non_root is not True and uid is None)
            if root and not sc.get("privileged") and not notes.get(f"nacre.dev/root-reason.{c['name']}", "").strip():
                bad.append(f"{where}: may run as root without a stated reason")
            res = c.get("resources") or {}
            if not (dig(res, "requests.cpu") and dig(res, "requests.memory") and dig(res, "limits.memory")):
                bad.append(f"{where}: no cpu and memory requests and memory limit")
    return bad


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_selectors(docs):
    bad, pods = [], [(d["metadata"].get("namespace"), t["metadata"].get("labels") or {}) for d, t in pod_templates(docs)]
    for d in docs:
        ns = d["metadata"].get("namespace")
        sel = None
        if d["kind"] == "Service":
            sel = d["spec"].get("selector")
        elif d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"].get("matchLabels")
        if sel is not None and not any(pns == ns and matches(sel, labels) for pns, labels in pods):
            bad.append(f"{name_of(d)}: selects no pod")
    return bad


# Pod Security Standards (the admission controller enforcing a namespace's
# pod-security.kubernetes.io/enforce level): what a pod of each level may not do.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def pod_security_violations(spec, level):
    """The reasons the Pod Security admission of `level` would refuse this pod spec."""
    why = []
    if level not in ("baseline", "restricted"):
        return why
    containers = spec.get("initContainers", []) + spec["containers"]
    psc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            why.append(key)
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            why.append(f"hostPath volume {v['name']}")
        elif level == "restricted" and not (set(v) - {"name"}) <= RESTRICTED_VOLUMES:
            why.append(f"volume {v['name']} of type {sorted(set(v) - {'name'})}")
    if psc.get("sysctls"):
        why.append("sysctls")
    for c in containers:
        sc, n = c.get("securityContext") or {}, c["name"]
        caps = sc.get("capabilities") or {}
        if sc.get("privileged"):
            why.append(f"{n}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            why.append(f"{n}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            why.append(f"{n}: procMount")
        baseline_caps = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
        allowed = {"NET_BIND_SERVICE"} if level == "restricted" else baseline_caps
        if set(caps.get("add") or []) - allowed:
            why.append(f"{n}: adds {sorted(set(caps.get('add')) - allowed)}")
        for where in (sc, psc):
            if dig(where, "seccompProfile.type") == "Unconfined":
                why.append(f"{n}: seccomp Unconfined")
        if level == "restricted":
            if sc.get("allowPrivilegeEscalation") is not False:
                why.append(f"{n}: allowPrivilegeEscalation is not false")
            if "ALL" not in (caps.get("drop") or []):
                why.append(f"{n}: does not drop ALL")
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                why.append(f"{n}: runAsNonRoot is not true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                why.append(f"{n}: runAsUser 0")
            if dig(sc, "seccompProfile.type") not in ("RuntimeDefault", "Localhost") and dig(psc, "seccompProfile.type") not in (
                "RuntimeDefault",
                "Localhost",
            ):
                why.append(f"{n}: no RuntimeDefault or Localhost seccomp profile")
    return why


def check_pod_security(docs):
    """Every pod would be admitted by its namespace's enforced Pod Security level (the rules
    of the Pod Security Standards that these manifests can touch)."""
    levels = {
        d["metadata"]["name"]: (d["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce", "privileged")
        for d in docs
        if d["kind"] == "Namespace"
    }
    bad = []
    for d, tpl in pod_templates(docs):
        level = levels.get(d["metadata"].get("namespace"))
        if level is None and levels:
            continue
        for why in pod_security_violations(tpl["spec"], level or "privileged"):
            bad.append(f"{name_of(d)}: refused by Pod Security {level}: {why}")
    return bad


def check_namespaces(docs):
    """Every namespaced object names its namespace (a component's resources do not inherit the
    base's), one of those the manifests create."""
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    bad = []
    for d in docs:
        if d["kind"] == "Namespace":
            continue
        ns = d["metadata"].get("namespace")
        if ns is None:
            bad.append(f"{name_of(d)}: no namespace")
        elif created and ns not in created:
            bad.append(f"{name_of(d)}: namespace {ns} is not created here")
    return bad


def static_checks(label, docs):
    n, bad = check_references(docs)
    bad += check_privilege(docs) + check_selectors(docs) + check_namespaces(docs) + check_pod_security(docs)
    for b in bad:
        fail(f"{label}: {b}")
    if not bad:
        ok(f"{label}: {n} Secret/ConfigMap references resolve; privileges stated; selectors match; Pod Security levels admit every pod")


def self_test(docs):
    """Each static check refuses a broken copy of `docs` (the example overlay)."""

    def broken(mutate):
        d = copy.deepcopy(docs)
        mutate(d)
        return d

    def workload(d, name):
        return next(x for x in d if x["kind"] in WORKLOADS and x["metadata"]["name"] == name)

    def drop_key(d):
        s = next(x for x in d if x["kind"] == "Secret" and x["metadata"]["name"].startswith("nacre-attestation-keys"))
        del s["data"]["log.key"]

    def rename_secret(d):
        s = next(x for x in d if x["kind"] == "Secret" and x["metadata"]["name"].startswith("nacre-attestation-database"))
        s["metadata"]["name"] = "elsewhere"

    def privileged(d):
        c = workload(d, "nacre-attestation")["spec"]["template"]["spec"]["containers"][0]
        c["securityContext"]["privileged"] = True

    def unexplained_root(d):
        tpl = workload(d, "nacre-host-agent-snp")["spec"]["template"]
        del tpl["metadata"]["annotations"]["nacre.dev/root-reason.agent"]

    def added_cap(d):
        c = workload(d, "nacre-host-agent-tdx")["spec"]["template"]["spec"]["containers"][0]
        c["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]

    def orphan_pdb(d):
        p = next(x for x in d if x["kind"] == "PodDisruptionBudget")
        p["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "nobody"}

    def host_path(d):
        spec = workload(d, "nacre-attestation")["spec"]["template"]["spec"]
        spec["volumes"].append({"name": "node", "hostPath": {"path": "/"}})

    def root_service(d):
        workload(d, "nacre-attestation")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
        workload(d, "nacre-attestation")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")

    cases = [
        ("a Secret key removed", drop_key, lambda d: check_references(d)[1]),
        ("a Secret renamed", rename_secret, lambda d: check_references(d)[1]),
        ("a privileged container", privileged, check_privilege),
        ("root without its reason", unexplained_root, check_privilege),
        ("an added capability", added_cap, check_privilege),
        ("a PDB selecting nothing", orphan_pdb, check_selectors),
        ("an object without a namespace", lambda d: d[-1]["metadata"].pop("namespace"), check_namespaces),
        ("a hostPath in a restricted namespace", host_path, check_pod_security),
        ("a root service in a restricted namespace", root_service, check_pod_security),
    ]
    for what, mutate, check in cases:
        if check(broken(mutate)):
            ok(f"self-test: {what} is refused")
        else:
            fail(f"self-test: {what} passed the checks")


# ---------------------------------------------------------------- running the pods


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decoded(doc, key):
    if doc["kind"] == "Secret":
        return base64.b64decode(doc["data"][key])
    return (doc.get("data") or {})[key].encode()


class Pod:
    """One container of a rendered pod template, run here as its pod would run it."""

    def __init__(self, docs, workload, container, nacre, root, env_override):
        self.name = f"{workload['metadata']['name']}/{container['name']}"
        self.docs, self.ns = docs, workload["metadata"].get("namespace")
        self.spec = workload["spec"]["template"]["spec"]
        self.container, self.nacre, self.root = container, nacre, root
        self.mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        self.ports = {}
        self.env_override = env_override
        self.proc = None
        self.log = open(os.path.join(root, "container.log"), "w+")

    def object(self, kind, name):
        return next(
            d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == self.ns
        )

    def path(self, p):
        """A container path under the scratch root, when it is under one of its mounts."""
        if any(p == m or p.startswith(m.rstrip("/") + "/") for m in self.mounts):
            return self.root + p
        return p

    def lay_out(self):
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        for m in self.container.get("volumeMounts", []):
            v, target = volumes[m["name"]], self.root + m["mountPath"]
            os.makedirs(target, exist_ok=True)
            for field, kind, key in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
                src = v.get(field)
                if not src:
                    continue
                doc = self.object(kind, src[key])
                mode = src.get("defaultMode", 0o644)
                keys = (doc.get("data") or {}).keys()
                items = src.get("items") or [{"key": k, "path": k} for k in keys]
                for it in items:
                    f = os.path.join(target, it["path"])
                    with open(f, "wb") as out:
                        out.write(decoded(doc, it["key"]))
                    os.chmod(f, it.get("mode", mode))

    def environment(self):
        env = {"PATH": os.environ["PATH"]}
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                vf = e["valueFrom"]
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                kind = "Secret" if "secretKeyRef" in vf else "ConfigMap"
                env[e["name"]] = decoded(self.object(kind, ref["name"]), ref["key"]).decode()
        for k, v in self.env_override.items():
            if k in env:
                env[k] = v(env[k])
        # Absolute container paths inside env values (a URL's sslrootcert) gain the root.
        for k, v in env.items():
            env[k] = re.sub(r"(?<![\w/])(/nacre/[\w./-]+)", lambda m: self.path(m.group(1)), v)
        return env

    def relisten(self):
        """0.0.0.0:PORT in the mounted configs → a free loopback port (loopback only here)."""
        for mount in self.mounts:
            base = self.root + mount
            for f in os.listdir(base):
                p = os.path.join(base, f)
                if not f.endswith(".toml") or not os.path.isfile(p):
                    continue
                text = open(p).read()

                def swap(m):
                    port = free_port()
                    self.ports[int(m.group(1))] = port
                    return f'listen = "127.0.0.1:{port}"'

                new = re.sub(r'listen = "0\.0\.0\.0:(\d+)"', swap, text)
                if new != text:
                    mode = os.stat(p).st_mode
                    os.chmod(p, 0o644)
                    open(p, "w").write(new)
                    os.chmod(p, mode & 0o7777)

    def argv(self, cmd):
        assert cmd[0] == "nacre", f"{self.name}: runs {cmd[0]}, not nacre"
        return [self.nacre] + [self.path(a) if a.startswith("/") else a for a in cmd[1:]]

    def start(self):
        self.lay_out()
        self.relisten()
        for m in self.container.get("volumeMounts", []):
            os.makedirs(self.root + m["mountPath"], exist_ok=True)
        self.env = self.environment()
        self.proc = subprocess.Popen(
            self.argv(self.container["command"]), env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def port(self, name_or_number):
        if isinstance(name_or_number, str):
            name_or_number = next(p["containerPort"] for p in self.container["ports"] if p["name"] == name_or_number)
        return self.ports.get(name_or_number, name_or_number)

    def http(self, path, port):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # as the kubelet does
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def probe(self, kind, p, deadline):
        """Runs probe `p` until it passes or `deadline`; returns a failure or None."""
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"the container exited ({self.proc.returncode}) before its {kind} probe passed"
            if "httpGet" in p:
                g = p["httpGet"]
                if g.get("scheme") != "HTTPS":
                    return f"{kind} probe {g['path']}: not HTTPS (the server speaks only TLS)"
                last = self.http(g["path"], self.port(g["port"]))
                if last == 200:
                    return None
            elif "exec" in p:
                r = subprocess.run(self.argv(p["exec"]["command"]), env=self.env, capture_output=True, text=True)
                last = f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
                if r.returncode == 0:
                    return None
            else:
                return f"{kind} probe of an unchecked type {sorted(p)}"
            time.sleep(0.3)
        return f"{kind} probe never passed (last: {last})"

    def check(self, timeout):
        deadline = time.time() + timeout
        probes = [(k, self.container[k]) for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in self.container]
        if not probes:
            fail(f"{self.name}: no probes")
        for kind, p in probes:
            why = self.probe(kind, p, deadline)
            where = p.get("httpGet", {}).get("path") or " ".join(p.get("exec", {}).get("command", []))
            if why:
                fail(f"{self.name}: {kind} ({where}): {why}")
            else:
                ok(f"{self.name}: {kind} ({where}) passes against the running container")
        try:
            status = open(f"/proc/{self.proc.pid}/status").read()
            rss = re.search(r"VmHWM:\s+(\d+) kB", status).group(1)
            req = dig(self.container, "resources.requests.memory")
            print(f"info  {self.name}: peak RSS {int(rss) // 1024} MiB after its probes (requests {req})")
        except (OSError, AttributeError):
            pass
        http = [p["httpGet"] for _, p in probes if "httpGet" in p]
        if http:
            status = self.http("/no-such-route", self.port(http[0]["port"]))
            if status == 404:
                ok(f"{self.name}: an unknown route is 404 (a wrong probe path would fail)")
            else:
                fail(f"{self.name}: GET /no-such-route answered {status}, not 404")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.seek(0)
        return self.log.read()


def run_pods(label, docs, nacre, scratch, env_override, expect, after=None):
    started = []
    for d, tpl in pod_templates(docs):
        for c in tpl["spec"]["containers"]:
            if not c["image"].startswith(NACRE_IMAGES):
                continue
            root = tempfile.mkdtemp(prefix=f"{d['metadata']['name']}-", dir=scratch)
            pod = Pod(docs, d, c, nacre, root, env_override)
            pod.start()
            started.append(pod)
    names = sorted(p.name for p in started)
    if names != sorted(expect):
        fail(f"{label}: ran {names}, expected {sorted(expect)}")
    try:
        for pod in started:
            pod.check(timeout=90)
        if after:
            after({p.name: p for p in started})
    finally:
        for pod in started:
            out = pod.stop()
            if any(f.startswith(f"{pod.name}:") for f in failures):
                print(f"--- {pod.name} output\n{out[-4000:]}\n---")


# ---------------------------------------------------------------- PostgreSQL for the pods


def tls_material(dir):
    """A CA and a server certificate for 127.0.0.1 (openssl), as a managed database has."""
    key = lambda p: run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p])
    key(f"{dir}/ca.key")
    run(["openssl", "req", "-x509", "-new", "-key", f"{dir}/ca.key", "-subj", "/CN=check database CA", "-days", "2", "-out", f"{dir}/ca.crt"])
    key(f"{dir}/server.key")
    run(["openssl", "req", "-new", "-key", f"{dir}/server.key", "-subj", "/CN=127.0.0.1", "-out", f"{dir}/server.csr"])
    with open(f"{dir}/ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", f"{dir}/server.csr", "-CA", f"{dir}/ca.crt", "-CAkey", f"{dir}/ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", f"{dir}/ext", "-out", f"{dir}/server.crt"])


def with_host(url, real):
    """The rendered URL with the local server's credentials, host and port, its query kept."""
    q = url.split("?", 1)[1] if "?" in url else ""
    base = real.split("?", 1)[0]
    return f"{base}?{q}" if q else base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nacre", required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--validator", required=True)
    ap.add_argument("--postgres", required=True, help="scripts/postgres.sh")
    ap.add_argument("--out", required=True, help="where rendered manifests are kept")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scratch = tempfile.mkdtemp(prefix="nacre-deploy-")
    # PostgreSQL runs as its own user when this runs as root: it must reach its directories.
    os.chmod(scratch, 0o711)
    os.makedirs(a.out, exist_ok=True)
    pgs = []
    try:
        tls = f"{scratch}/pg-tls"
        os.makedirs(tls)
        tls_material(tls)
        work = f"{scratch}/deploy"
        generate(f"{repo}/deploy", a.nacre, work, f"{tls}/ca.crt")
        rendered = {}
        for overlay in OVERLAYS:
            text, docs = render(a.kubectl, f"{work}/overlays/{overlay}")
            path = f"{a.out}/{overlay}.yaml"
            open(path, "w").write(text)
            passed, custom = validate(a.validator, path, docs)
            ok(f"{overlay}: {len(docs)} objects; {passed} valid against Kubernetes {KUBERNETES_VERSION} (strict), {custom} custom resources checked")
            static_checks(overlay, docs)
            rendered[overlay] = docs
        self_test(rendered["example"])

        # A PostgreSQL for each overlay's replicas: plain for the example (its in-cluster
        # database), TLS with a CA for managed-db (verify-full, as the overlay requires).
        plain = f"{scratch}/pg-plain"
        url_plain = run([a.postgres, "start", plain]).stdout.strip()
        pgs.append(plain)
        secure = f"{scratch}/pg-tls-server"
        env = dict(os.environ, PG_TLS_CERT=f"{tls}/server.crt", PG_TLS_KEY=f"{tls}/server.key")
        url_tls = run([a.postgres, "start", secure], env=env).stdout.strip()
        pgs.append(secure)
        def database_lost(pods):
            """Readiness follows the database; liveness does not."""
            svc = pods["nacre-attestation/attestation"]
            port = svc.port("https")
            run([a.postgres, "stop", plain])
            deadline, ready = time.time() + 15, None
            while time.time() < deadline and ready != 503:
                ready = svc.http("/readyz", port)
                time.sleep(0.3)
            live = svc.http("/healthz", port)
            if (ready, live) == (503, 200):
                ok("nacre-attestation/attestation: database stopped → /readyz 503, /healthz 200")
            else:
                fail(f"nacre-attestation/attestation: database stopped → /readyz {ready}, /healthz {live}")

        run_pods(
            "example",
            rendered["example"],
            a.nacre,
            scratch,
            {"NACRE_DATABASE_URL": lambda u: with_host(u, url_plain)},
            ["nacre-attestation/attestation", "nacre-host-agent-snp/agent", "nacre-host-agent-tdx/agent"],
            after=database_lost,
        )
        run_pods("example-witness", rendered["example-witness"], a.nacre, scratch, {}, ["nacre-witness/witness"])
        # cert-manager is not here: its Secret is stood in by generate.sh's certificate.
        gen = f"{work}/overlays/managed-db/generated/attestation"
        issued = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": c["spec"]["secretName"], "namespace": c["metadata"]["namespace"]},
                "data": {k: base64.b64encode(open(f"{gen}/{k}", "rb").read()).decode() for k in ("tls.crt", "tls.key", "ca.crt")},
            }
            for c in rendered["managed-db"]
            if c["kind"] == "Certificate"
        ]
        if len(issued) != 1:
            fail(f"managed-db: {len(issued)} Certificates, expected 1")

        def wrong_database_ca(pods):
            """verify-full is enforced: under another CA the service does not start."""
            docs = copy.deepcopy(rendered["managed-db"] + issued)
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nacre-attestation-db-ca"))
            cm["data"]["ca.crt"] = open(f"{work}/overlays/example-witness/generated/ca.crt").read()
            d = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nacre-attestation")
            root = tempfile.mkdtemp(prefix="wrong-ca-", dir=scratch)
            pod = Pod(docs, d, d["spec"]["template"]["spec"]["containers"][0], a.nacre, root,
                      {"NACRE_DATABASE_URL": lambda u: with_host(u, url_tls)})
            pod.start()
            try:
                code = pod.proc.wait(60)
            except subprocess.TimeoutExpired:
                code = None
            out = pod.stop()
            if code not in (None, 0) and re.search(r"certificate|UnknownIssuer|tls", out, re.I):
                ok(f"nacre-attestation/attestation: under another database CA it exits ({code}): {out.strip().splitlines()[-1][:160]}")
            else:
                fail(f"nacre-attestation/attestation: under another database CA: exit {code}\n{out[-2000:]}")
        run_pods(
            "managed-db",
            rendered["managed-db"] + issued,
            a.nacre,
            scratch,
            {"NACRE_DATABASE_URL": lambda u: with_host(u, url_tls)},
            ["nacre-attestation/attestation", "nacre-host-agent-snp/agent", "nacre-host-agent-tdx/agent"],
            after=wrong_database_ca,
        )
    finally:
        for d in pgs:
            subprocess.run([a.postgres, "stop", d], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    if failures:
        print(f"deploy check: {len(failures)} failures")
        return 1
    print("deploy check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
