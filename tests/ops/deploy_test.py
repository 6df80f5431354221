"""Checks the Kubernetes manifests under deploy/kubernetes (and cluster/).

Every file must be valid YAML with well-formed objects whose selectors and
references meet, and each fanin Deployment must agree with fanin_server itself
and with the mesh: every --flag and FANIN_* variable is one the binary knows
(from its --helpfull) and the variables really reach their flags, ports are
named grpc-/tcp-/http-, the raw port is excluded from sidecar capture, probes
use gRPC health on the gRPC port, the flags' ports match the container ports,
and the grace period covers preStop plus --drain_timeout.

The cluster manifests must fit together: fanin's FANIN_CLUSTER_* settings name
every NATS server on its client port, with the same token and a replica count
the NATS cluster can hold; the NATS StatefulSet's config, volumes, probes and
lame-duck shutdown agree with each other; and the ConfigMap's nats.conf, run
as three real nats-servers on loopback, forms a JetStream cluster that takes
an R3 file stream with the token and refuses a client without it.

Usage: deploy_test.py FANIN_SERVER_BINARY NATS_SERVER_BINARY MANIFEST...
"""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request
import sys

import yaml

BINARY = None
NATS_SERVER = None
MANIFESTS = []


def load_all():
    docs = []
    for path in MANIFESTS:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((path, doc))
    return docs


def duration_seconds(text):
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def size_bytes(text):
    """'8GB', '512MB' (nats.conf: powers of 1024, as nats-server reads them),
    '10Gi' (Kubernetes) or a plain number of bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B?)\s*", str(text), re.I)
    assert m, "not a size: %r" % text
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(m.group(1)) * 1024**power


def helpfull(env=None):
    """fanin_server --helpfull with ENV added to the environment: the flags
    listed under files in server/, each with the text of its entry."""
    out = subprocess.run([BINARY, "--helpfull"], capture_output=True, text=True,
                         env=dict(os.environ, **(env or {})))
    text = out.stdout + out.stderr
    flags = {}
    for section in re.split(r"^\s*Flags from ", text, flags=re.M)[1:]:
        source, _, body = section.partition("\n")
        if not source.startswith("server/"):
            continue  # Abseil's own --flagfile and friends
        for entry in re.split(r"^\s+--", body, flags=re.M)[1:]:
            name = re.match(r"[a-z0-9_]+", entry).group(0)
            flags[name] = " ".join(entry.split())
    return flags, text


def env_value(env, pod_values):
    """The value a container would see for ENV (one entry of `env:`), with
    the downward API and Secrets given stand-in values and $(VAR) expanded."""
    if "value" in env:
        return re.sub(r"\$\((\w+)\)", lambda m: pod_values[m.group(1)],
                      str(env["value"]))
    source = env["valueFrom"]
    if "fieldRef" in source:
        return {"metadata.name": "fanin-cluster-5d9c7b-x2x9q",
                "metadata.namespace": "default",
                "status.podIP": "10.1.2.3"}[source["fieldRef"]["fieldPath"]]
    if "secretKeyRef" in source:
        return "stand-in-secret-0123456789abcdef"
    raise AssertionError("unexpected env source: %r" % source)


def container_env(container):
    """{NAME: value} as the container would see it (stand-ins, see env_value)."""
    values = {}
    for env in container.get("env", []):
        values[env["name"]] = env_value(env, values)
    return values


def env_source(container, name):
    for env in container.get("env", []):
        if env["name"] == name:
            return env
    return None


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_conf_value(conf, key):
    m = re.search(r"^\s*%s\s*[:=]\s*\"?([^\"\s#]+)\"?" % re.escape(key), conf, re.M)
    return m.group(1) if m else None


class Manifests:
    """The manifests, parsed once, grouped the way the checks need them."""

    def __init__(self):
        self.docs = load_all()
        self.by_kind = {}
        for _, doc in self.docs:
            self.by_kind.setdefault(doc["kind"], []).append(doc)
        self.fanin = [d for d in self.by_kind.get("Deployment", [])
                      if "fanin_server" in d["spec"]["template"]["spec"]
                      ["containers"][0]["image"]]

    def named(self, kind, name):
        found = [d for d in self.by_kind.get(kind, [])
                 if d["metadata"]["name"] == name]
        assert found, "no %s named %s in the manifests" % (kind, name)
        return found[0]

    def workloads(self):
        return self.by_kind.get("Deployment", []) + self.by_kind.get("StatefulSet", [])


M = None


def setUpModule():
    global M
    M = Manifests()


def args_of(container):
    args = {}
    for arg in container["args"]:
        m = re.fullmatch(r"--([a-z_]+)=(.*)", arg)
        assert m, "argument not in --flag=value form: " + arg
        args[m.group(1)] = m.group(2)
    return args


class ObjectsTest(unittest.TestCase):
    def test_every_document_is_a_named_object(self):
        self.assertGreaterEqual(len(M.docs), 4)
        for path, doc in M.docs:
            for key in ("apiVersion", "kind", "metadata"):
                self.assertIn(key, doc, path)
            self.assertTrue(doc["metadata"].get("name"), path)
        self.assertEqual(len(M.fanin), 2, "the standalone and the cluster Deployment")

    def test_selectors_meet_pod_labels(self):
        pods = [w["spec"]["template"]["metadata"]["labels"] for w in M.workloads()]
        for w in M.workloads():
            self.assertTrue(matches(w["spec"]["selector"]["matchLabels"],
                                    w["spec"]["template"]["metadata"]["labels"]),
                            w["metadata"]["name"])
        selectors = [(s["metadata"]["name"], s["spec"]["selector"])
                     for s in M.by_kind["Service"]]
        selectors += [(p["metadata"]["name"], p["spec"]["selector"]["matchLabels"])
                      for p in M.by_kind["PodDisruptionBudget"]]
        for policy in M.by_kind.get("NetworkPolicy", []):
            name = policy["metadata"]["name"]
            selectors.append((name, policy["spec"]["podSelector"]["matchLabels"]))
            for rule in policy["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    selectors.append((name, peer["podSelector"]["matchLabels"]))
        for name, selector in selectors:
            hits = [labels for labels in pods if matches(selector, labels)]
            self.assertEqual(len(hits), 1, "%s selects %d workloads" % (name, len(hits)))

    def test_referenced_secrets_and_config_maps_exist(self):
        for w in M.workloads():
            spec = w["spec"]["template"]["spec"]
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    M.named("Secret", volume["secret"]["secretName"])
                if "configMap" in volume:
                    M.named("ConfigMap", volume["configMap"]["name"])
            for container in spec["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        secret = M.named("Secret", ref["name"])
                        self.assertIn(ref["key"], secret["stringData"], env["name"])


class FaninDeploymentTest(unittest.TestCase):
    """The checks every fanin Deployment (standalone and cluster) must pass."""

    @staticmethod
    def each():
        """(name, pod template, container, {port name: port}, {flag: value})
        of each fanin Deployment."""
        out = []
        for deployment in M.fanin:
            pod = deployment["spec"]["template"]
            container = pod["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            out.append((deployment["metadata"]["name"], pod, container, ports,
                        args_of(container)))
        return out

    def skip_until_cluster_mode(self, container, flags):
        # The cluster flags land with server/cluster; until then the binary
        # cannot vouch for the cluster Deployment's variables.
        if env_source(container, "FANIN_CLUSTER_NATS") and "cluster_nats" not in flags:
            self.skipTest("fanin_server has no --cluster_nats yet")

    def test_flags_and_env_are_known_to_the_binary(self):
        flags, _ = helpfull()
        self.assertIn("drain_timeout", flags)  # --helpfull lists fanin's flags
        for name, _, container, _, args in self.each():
            with self.subTest(deployment=name):
                for flag in args:
                    self.assertIn(flag, flags, "--%s is not a fanin_server flag" % flag)
                self.skip_until_cluster_mode(container, flags)
                for env in container.get("env", []):
                    var = env["name"]
                    if not var.startswith("FANIN_"):
                        # Only as an input to a FANIN_ variable's $(NAME).
                        users = [e for e in container["env"]
                                 if "$(%s)" % var in str(e.get("value", ""))]
                        self.assertTrue(users, "%s is neither FANIN_* nor used by one" % var)
                        continue
                    self.assertIn(var[len("FANIN_"):].lower(), flags, var)

    def test_env_reaches_the_flags(self):
        # Abseil's --helpfull prints "currently: V" for a flag set away from
        # its default: the variables, parsed by fanin_server's own overlay.
        known, _ = helpfull()
        for name, _, container, _, args in self.each():
            with self.subTest(deployment=name):
                self.skip_until_cluster_mode(container, known)
                values = {k: v for k, v in container_env(container).items()
                          if k.startswith("FANIN_")}
                flags, text = helpfull(values)
                self.assertTrue(flags, "fanin_server refused the variables:\n" + text[-2000:])
                for var, value in values.items():
                    entry = flags.get(var[len("FANIN_"):].lower())
                    self.assertIsNotNone(entry, "%s names no flag" % var)
                    set_away = "currently:" in entry
                    is_default = re.search(r'default: "?%s"?;' % re.escape(value), entry)
                    self.assertTrue(set_away or is_default,
                                    "%s=%s did not reach its flag: %s" % (var, value, entry))

    def test_ports_are_named_for_the_mesh_and_match_the_flags(self):
        for name, _, _, ports, args in self.each():
            with self.subTest(deployment=name):
                for port_name in ports:
                    self.assertRegex(port_name, r"^(grpc|tcp|http)-")
                port_of = lambda address: int(address.rsplit(":", 1)[1])
                self.assertEqual(port_of(args["grpc_address"]), ports["grpc-api"])
                self.assertEqual(port_of(args["listen"]), ports["tcp-raw"])
                self.assertEqual(port_of(args["metrics_address"]), ports["http-metrics"])

    def test_raw_port_bypasses_the_sidecar(self):
        for name, pod, _, ports, _ in self.each():
            with self.subTest(deployment=name):
                annotations = pod["metadata"]["annotations"]
                raw = str(ports["tcp-raw"])
                for key in ("traffic.sidecar.istio.io/excludeInboundPorts",
                            "config.linkerd.io/skip-inbound-ports"):
                    self.assertIn(raw, annotations[key].split(","), key)
                self.assertEqual(annotations["prometheus.io/port"], str(ports["http-metrics"]))

    def test_probes_use_grpc_health_on_the_grpc_port(self):
        for name, _, container, ports, _ in self.each():
            with self.subTest(deployment=name):
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    self.assertEqual(container[probe]["grpc"]["port"], ports["grpc-api"], probe)

    def test_grace_period_covers_prestop_and_drain(self):
        for name, pod, container, _, args in self.each():
            with self.subTest(deployment=name):
                grace = pod["spec"]["terminationGracePeriodSeconds"]
                pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                drain = duration_seconds(args["drain_timeout"])
                self.assertGreater(drain, 0)
                self.assertLess(pre_stop + drain, grace)
                self.assertLessEqual(grace, 30)  # Kubernetes' default grace period

    def test_services_target_named_container_ports(self):
        for name, pod, _, ports, _ in self.each():
            with self.subTest(deployment=name):
                labels = pod["metadata"]["labels"]
                services = [s for s in M.by_kind["Service"]
                            if matches(s["spec"]["selector"], labels)]
                seen = set()
                for svc in services:
                    for port in svc["spec"]["ports"]:
                        self.assertIn(port["targetPort"], ports, svc["metadata"]["name"])
                        self.assertEqual(port["name"], port["targetPort"])
                        seen.add(port["name"])
                        if port["name"].startswith("grpc-"):
                            self.assertEqual(port.get("appProtocol"), "grpc")
                self.assertEqual(seen, set(ports))
                raw = [s for s in services
                       if any(p["name"] == "tcp-raw" for p in s["spec"]["ports"])][0]
                self.assertEqual(raw["spec"].get("externalTrafficPolicy"), "Local")

    def test_tokens_secret_is_mounted_where_the_flag_points(self):
        for name, pod, container, _, args in self.each():
            with self.subTest(deployment=name):
                mount = container["volumeMounts"][0]
                self.assertTrue(args["auth_tokens_file"].startswith(mount["mountPath"] + "/"))
                volume = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]][0]
                secret = M.named("Secret", volume["secret"]["secretName"])
                key = args["auth_tokens_file"][len(mount["mountPath"]) + 1:]
                self.assertIn(key, secret["stringData"])
                for line in secret["stringData"][key].splitlines():
                    line = line.split("#", 1)[0].split()
                    if line:
                        self.assertEqual(len(line), 2)
                        self.assertIn(line[0], ("reader", "writer"))


class ClusterTest(unittest.TestCase):
    """fanin in cluster mode and the NATS JetStream cluster it uses."""

    @classmethod
    def setUpClass(cls):
        cls.fanin = [d for d in M.fanin
                     if env_source(d["spec"]["template"]["spec"]["containers"][0],
                                   "FANIN_CLUSTER_NATS")][0]
        cls.fanin_pod = cls.fanin["spec"]["template"]
        cls.fanin_container = cls.fanin_pod["spec"]["containers"][0]
        cls.env = container_env(cls.fanin_container)
        cls.nats = [s for s in M.by_kind["StatefulSet"]
                    if s["spec"]["template"]["spec"]["containers"][0]["image"]
                    .startswith("nats:")][0]
        cls.nats_pod = cls.nats["spec"]["template"]
        cls.nats_container = cls.nats_pod["spec"]["containers"][0]
        cls.nats_ports = {p["name"]: p["containerPort"]
                          for p in cls.nats_container["ports"]}
        cls.nats_service = M.named("Service", cls.nats["spec"]["serviceName"])
        args = cls.nats_container["args"]
        cls.conf_path = args[args.index("--config") + 1]
        mounts = {m["mountPath"]: m["name"] for m in cls.nats_container["volumeMounts"]}
        volume = [v for v in cls.nats_pod["spec"]["volumes"]
                  if v["name"] == mounts[os.path.dirname(cls.conf_path)]][0]
        cls.conf = M.named("ConfigMap", volume["configMap"]["name"])["data"][
            os.path.basename(cls.conf_path)]
        cls.nats_mounts = mounts

    def server_names(self):
        """The stable DNS name of each NATS server: POD.SERVICE."""
        name, service = self.nats["metadata"]["name"], self.nats_service["metadata"]["name"]
        return ["%s-%d.%s" % (name, i, service) for i in range(self.nats["spec"]["replicas"])]

    def test_three_fanin_nodes_three_nats_servers_three_copies(self):
        self.assertEqual(self.fanin["spec"]["replicas"], 3)
        self.assertEqual(self.nats["spec"]["replicas"], 3)
        replicas = int(self.env["FANIN_CLUSTER_REPLICAS"])
        self.assertIn(replicas, (1, 3))  # what --cluster_replicas accepts
        self.assertEqual(replicas, 3, "durability: one copy on each NATS server")
        self.assertIn(self.env.get("FANIN_CLUSTER_STORAGE", "file"), ("file",))

    def test_node_name_and_advertise_address_come_from_the_pod(self):
        node = env_source(self.fanin_container, "FANIN_NODE_NAME")
        self.assertEqual(node["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        advertise = env_source(self.fanin_container, "FANIN_CLUSTER_ADVERTISE_ADDRESS")
        m = re.fullmatch(r"\$\((\w+)\):(\d+)", advertise["value"])
        self.assertTrue(m, advertise["value"])
        ip = env_source(self.fanin_container, m.group(1))
        self.assertEqual(ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP")
        # Kubernetes expands $(VAR) only from variables defined above it.
        names = [e["name"] for e in self.fanin_container["env"]]
        self.assertLess(names.index(m.group(1)), names.index("FANIN_CLUSTER_ADVERTISE_ADDRESS"))
        grpc = [p for p in self.fanin_container["ports"] if p["name"] == "grpc-api"][0]
        self.assertEqual(int(m.group(2)), grpc["containerPort"])

    def test_nats_urls_name_every_server_on_its_client_port(self):
        urls = self.env["FANIN_CLUSTER_NATS"].split(",")
        hosts = []
        for url in urls:
            m = re.fullmatch(r"nats://([a-z0-9.-]+):(\d+)", url)
            self.assertTrue(m, url)
            hosts.append(m.group(1))
            self.assertEqual(int(m.group(2)), self.nats_ports["tcp-client"])
        self.assertEqual(sorted(hosts), self.server_names())
        self.assertEqual(nats_conf_value(self.conf, "listen").rsplit(":", 1)[1],
                         str(self.nats_ports["tcp-client"]))

    def test_headless_service_publishes_servers_before_they_are_ready(self):
        spec = self.nats_service["spec"]
        self.assertEqual(spec["clusterIP"], "None")
        self.assertTrue(spec["publishNotReadyAddresses"])  # routes form before readiness
        self.assertEqual(self.nats["spec"]["podManagementPolicy"], "Parallel")
        for port in spec["ports"]:
            self.assertIn(port["targetPort"], self.nats_ports)
            self.assertRegex(port["name"], r"^(tcp|http)-")  # never sniffed as HTTP/gRPC

    def test_routes_name_every_server_on_the_cluster_port(self):
        block = re.search(r"cluster\s*\{(.*?)\n\}", self.conf, re.S).group(1)
        self.assertEqual(nats_conf_value(block, "listen").rsplit(":", 1)[1],
                         str(self.nats_ports["tcp-cluster"]))
        routes = re.findall(r"nats://([a-z0-9.-]+):(\d+)",
                            re.search(r"routes\s*[:=]?\s*\[(.*?)\]", block, re.S).group(1))
        self.assertEqual(sorted(h for h, _ in routes), self.server_names())
        for _, port in routes:
            self.assertEqual(int(port), self.nats_ports["tcp-cluster"])

    def server_name_var(self):
        return re.fullmatch(r"\$(\w+)", nats_conf_value(self.conf, "server_name")).group(1)

    def token_var(self):
        return re.search(r"authorization\s*\{[^}]*token\s*:\s*\$(\w+)", self.conf).group(1)

    def test_server_name_is_the_pod_name(self):
        # JetStream's Raft groups know servers by name: it must survive restarts.
        env = env_source(self.nats_container, self.server_name_var())
        self.assertEqual(env["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")

    def test_store_is_the_claimed_volume_and_holds_the_stream(self):
        store_dir = nats_conf_value(self.conf, "store_dir")
        claim = self.nats["spec"]["volumeClaimTemplates"][0]
        self.assertEqual(self.nats_mounts[store_dir], claim["metadata"]["name"])
        volume = size_bytes(claim["spec"]["resources"]["requests"]["storage"])
        store = size_bytes(nats_conf_value(self.conf, "max_file_store"))
        stream = int(self.env["FANIN_CLUSTER_STREAM_MAX_BYTES"])
        # R3: every server holds the whole stream, plus the KV buckets.
        self.assertLess(stream, store)
        self.assertLess(store, volume)

    def test_token_is_one_secret_for_both_sides(self):
        nats_ref = env_source(self.nats_container, self.token_var())["valueFrom"]["secretKeyRef"]
        fanin_ref = env_source(self.fanin_container,
                               "FANIN_CLUSTER_NATS_TOKEN")["valueFrom"]["secretKeyRef"]
        self.assertEqual(nats_ref, fanin_ref)

    def test_nats_traffic_stays_out_of_the_mesh(self):
        annotations = self.fanin_pod["metadata"]["annotations"]
        client = str(self.nats_ports["tcp-client"])
        for key in ("traffic.sidecar.istio.io/excludeOutboundPorts",
                    "config.linkerd.io/skip-outbound-ports"):
            self.assertIn(client, annotations[key].split(","), key)
        nats_annotations = self.nats_pod["metadata"]["annotations"]
        self.assertEqual(nats_annotations["sidecar.istio.io/inject"], "false")
        self.assertEqual(nats_annotations["linkerd.io/inject"], "disabled")

    def test_network_policy_lets_fanin_and_the_routes_in(self):
        policy = [p for p in M.by_kind["NetworkPolicy"]
                  if matches(p["spec"]["podSelector"]["matchLabels"],
                             self.nats_pod["metadata"]["labels"])][0]
        allowed = {}  # port name -> workloads allowed (None: anyone)
        for rule in policy["spec"]["ingress"]:
            peers = [p["podSelector"]["matchLabels"] for p in rule.get("from", [])]
            for port in rule["ports"]:
                self.assertIn(port["port"], self.nats_ports)
                allowed.setdefault(port["port"], []).extend(peers or [None])
        may = lambda port, pod: any(p is None or matches(p, pod["metadata"]["labels"])
                                    for p in allowed.get(port, []))
        self.assertTrue(may("tcp-client", self.fanin_pod))
        self.assertTrue(may("tcp-cluster", self.nats_pod))
        self.assertFalse(may("tcp-cluster", self.fanin_pod))
        self.assertIn(None, allowed["http-monitor"])  # probes and scrapers

    def test_probes_and_lame_duck_shutdown(self):
        c = self.nats_container
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(c[probe]["httpGet"]["port"], "http-monitor")
            self.assertTrue(c[probe]["httpGet"]["path"].startswith("/healthz"))
        self.assertEqual(nats_conf_value(self.conf, "http").rsplit(":", 1)[1],
                         str(self.nats_ports["http-monitor"]))
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(command[0], "nats-server")
        pid_file = nats_conf_value(self.conf, "pid_file")
        self.assertEqual(command[1:], ["-sl=ldm=" + pid_file])
        self.assertIn(os.path.dirname(pid_file), self.nats_mounts)  # writable
        # The SIGTERM after preStop is ignored while in lame duck mode; the
        # kubelet's SIGKILL must come after the grace period and the duration.
        ldm = (duration_seconds(nats_conf_value(self.conf, "lame_duck_grace_period")) +
               duration_seconds(nats_conf_value(self.conf, "lame_duck_duration")))
        self.assertLess(ldm, self.nats_pod["spec"]["terminationGracePeriodSeconds"])

    def test_disruptions_keep_a_quorum(self):
        pdb = [p for p in M.by_kind["PodDisruptionBudget"]
               if matches(p["spec"]["selector"]["matchLabels"],
                          self.nats_pod["metadata"]["labels"])][0]
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        spread = self.nats_pod["spec"]["topologySpreadConstraints"][0]
        self.assertEqual(spread["topologyKey"], "kubernetes.io/hostname")

    def test_config_forms_a_jetstream_cluster_on_loopback(self):
        """The ConfigMap's nats.conf, three times, on loopback: only the
        addresses and paths move; JetStream, cluster, auth and lame-duck
        settings run as written."""
        self.assertTrue(os.access(NATS_SERVER, os.X_OK), NATS_SERVER)
        names = self.server_names()
        client = {n: free_port() for n in names}
        route = {n: free_port() for n in names}
        http = {n: free_port() for n in names}
        token = "stand-in-token-for-the-test"
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work, True)
        procs = []
        for name in names:
            conf = self.conf
            conf = re.sub(r"(?m)^listen:.*$", "listen: 127.0.0.1:%d" % client[name], conf)
            conf = re.sub(r"(?m)^http:.*$", "http: 127.0.0.1:%d" % http[name], conf)
            conf = re.sub(r"(?m)^(\s+)listen:\s*\S+:%d" % self.nats_ports["tcp-cluster"],
                          r"\g<1>listen: 127.0.0.1:%d" % route[name], conf)
            for other in names:
                conf = re.sub(r"nats://%s:\d+" % re.escape(other),
                              "nats://127.0.0.1:%d" % route[other], conf)
            home = os.path.join(work, name)
            os.mkdir(home)
            conf = re.sub(r"(?m)^(\s*)store_dir:.*$", r'\g<1>store_dir: "%s/js"' % home, conf)
            conf = re.sub(r"(?m)^pid_file:.*$", 'pid_file: "%s/nats.pid"' % home, conf)
            path = os.path.join(home, "nats.conf")
            with open(path, "w") as f:
                f.write(conf)
            env = dict(os.environ, **container_env(self.nats_container))
            env[self.server_name_var()] = name.split(".")[0]
            env[self.token_var()] = token
            with open(os.path.join(home, "log"), "w") as log:
                procs.append(subprocess.Popen([NATS_SERVER, "-c", path], env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
        def stop():
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=20)
        self.addCleanup(stop)

        def logs():
            text = ""
            for name in names:
                with open(os.path.join(work, name, "log")) as f:
                    text += "--- %s\n%s\n" % (name, f.read()[-1500:])
            return text

        # /healthz: ok once the server is current with the meta leader.
        deadline = time.time() + 30
        for name in names:
            while True:
                try:
                    body = urllib.request.urlopen(
                        "http://127.0.0.1:%d/healthz" % http[name], timeout=2).read()
                    if json.loads(body).get("status") == "ok":
                        break
                except OSError:
                    pass
                self.assertLess(time.time(), deadline, "no healthy JetStream cluster\n" + logs())
                time.sleep(0.2)

        # An R3 file stream, as fanin creates it, through the client port with
        # the token; JetStream can place it only if all three servers joined.
        config = {"name": "fanin_events", "subjects": ["fanin.events.>"],
                  "storage": "file", "num_replicas": 3, "retention": "limits",
                  "max_bytes": int(self.env["FANIN_CLUSTER_STREAM_MAX_BYTES"])}
        deadline = time.time() + 30
        while True:
            try:
                reply = nats_request(client[names[0]], token,
                                     "$JS.API.STREAM.CREATE.fanin_events", json.dumps(config))
            except OSError as e:  # no answer in time
                reply = {"error": str(e)}
            if "error" not in reply:
                break
            # Right after forming, the meta leader may still be settling.
            self.assertLess(time.time(), deadline, "%s\n%s" % (reply, logs()))
            time.sleep(0.5)
        self.assertEqual(reply["config"]["num_replicas"], 3)
        self.assertEqual(reply["config"]["storage"], "file")
        with self.assertRaisesRegex(RuntimeError, "Authorization Violation"):
            nats_request(client[names[1]], "wrong-token", "$JS.API.INFO", "")


def nats_request(port, token, subject, payload):
    """One request over the NATS client protocol; the JSON reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        data = payload.encode()
        s.sendall(b'CONNECT {"auth_token":"%s","verbose":false,"pedantic":false,'
                  b'"headers":true,"no_responders":true}\r\n'
                  b"SUB _INBOX.deploy_test 1\r\n"
                  b"PUB %s _INBOX.deploy_test %d\r\n%s\r\nPING\r\n"
                  % (token.encode(), subject.encode(), len(data), data))
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode().strip())
            if line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return json.loads(f.read(size + 2)[:size])
            if line.startswith(b"HMSG"):  # a status only: 503, no responders yet
                size = int(line.split()[-1])
                return {"error": f.read(size + 2)[:size].decode().strip()}


if __name__ == "__main__":
    BINARY = sys.argv[1]
    NATS_SERVER = sys.argv[2]
    MANIFESTS = sys.argv[3:]
    unittest.main(argv=sys.argv[:1], verbosity=2)
