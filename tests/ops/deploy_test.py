"""Checks the Kubernetes manifests under deploy/kubernetes.

Every file must be valid YAML with well-formed objects, and the Deployment must
agree with fanin_server itself and with the mesh: every --flag and FANIN_*
variable is one the binary knows (from its --help), ports are named grpc-/tcp-/
http-, the raw port is excluded from sidecar capture, probes use gRPC health on
the gRPC port, the flags' ports match the container ports, and the grace period
covers preStop plus --drain_timeout.

Usage: deploy_test.py FANIN_SERVER_BINARY MANIFEST...
"""
import re
import subprocess
import sys
import unittest

import yaml

BINARY = None
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


def known_flags():
    out = subprocess.run([BINARY, "--help"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    return set(re.findall(r"^\s+--([a-z_]+)", text, re.M))


class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_all()
        cls.by_kind = {}
        for _, doc in cls.docs:
            cls.by_kind.setdefault(doc["kind"], []).append(doc)
        cls.deployment = cls.by_kind["Deployment"][0]
        cls.pod = cls.deployment["spec"]["template"]
        cls.container = cls.pod["spec"]["containers"][0]
        cls.ports = {p["name"]: p["containerPort"] for p in cls.container["ports"]}
        cls.args = {}
        for arg in cls.container["args"]:
            m = re.fullmatch(r"--([a-z_]+)=(.*)", arg)
            assert m, "argument not in --flag=value form: " + arg
            cls.args[m.group(1)] = m.group(2)

    def test_every_document_is_a_named_object(self):
        self.assertGreaterEqual(len(self.docs), 4)
        for path, doc in self.docs:
            for key in ("apiVersion", "kind", "metadata"):
                self.assertIn(key, doc, path)
            self.assertTrue(doc["metadata"].get("name"), path)

    def test_flags_and_env_are_known_to_the_binary(self):
        flags = known_flags()
        self.assertIn("drain_timeout", flags)  # --help lists fanin's flags
        for name in self.args:
            self.assertIn(name, flags, "--%s is not a fanin_server flag" % name)
        for env in self.container.get("env", []):
            self.assertTrue(env["name"].startswith("FANIN_"), env["name"])
            self.assertIn(env["name"][len("FANIN_"):].lower(), flags, env["name"])

    def test_ports_are_named_for_the_mesh_and_match_the_flags(self):
        for name in self.ports:
            self.assertRegex(name, r"^(grpc|tcp|http)-")
        port_of = lambda address: int(address.rsplit(":", 1)[1])
        self.assertEqual(port_of(self.args["grpc_address"]), self.ports["grpc-api"])
        self.assertEqual(port_of(self.args["listen"]), self.ports["tcp-raw"])
        self.assertEqual(port_of(self.args["metrics_address"]),
                         self.ports["http-metrics"])

    def test_raw_port_bypasses_the_sidecar(self):
        annotations = self.pod["metadata"]["annotations"]
        raw = str(self.ports["tcp-raw"])
        for key in ("traffic.sidecar.istio.io/excludeInboundPorts",
                    "config.linkerd.io/skip-inbound-ports"):
            self.assertIn(raw, annotations[key].split(","), key)
        self.assertEqual(annotations["prometheus.io/port"],
                         str(self.ports["http-metrics"]))

    def test_probes_use_grpc_health_on_the_grpc_port(self):
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertEqual(self.container[probe]["grpc"]["port"],
                             self.ports["grpc-api"], probe)

    def test_grace_period_covers_prestop_and_drain(self):
        grace = self.pod["spec"]["terminationGracePeriodSeconds"]
        pre_stop = self.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = duration_seconds(self.args["drain_timeout"])
        self.assertGreater(drain, 0)
        self.assertLess(pre_stop + drain, grace)
        self.assertLessEqual(grace, 30)  # Kubernetes' default grace period

    def test_services_target_named_container_ports(self):
        services = self.by_kind["Service"]
        seen = set()
        for svc in services:
            for port in svc["spec"]["ports"]:
                self.assertIn(port["targetPort"], self.ports, svc["metadata"]["name"])
                self.assertEqual(port["name"], port["targetPort"])
                seen.add(port["name"])
                if port["name"].startswith("grpc-"):
                    self.assertEqual(port.get("appProtocol"), "grpc")
        self.assertEqual(seen, set(self.ports))
        raw = [s for s in services
               if any(p["name"] == "tcp-raw" for p in s["spec"]["ports"])][0]
        self.assertEqual(raw["spec"].get("externalTrafficPolicy"), "Local")

    def test_tokens_secret_is_mounted_where_the_flag_points(self):
        mount = self.container["volumeMounts"][0]["mountPath"]
        self.assertTrue(self.args["auth_tokens_file"].startswith(mount + "/"))
        secret = self.by_kind["Secret"][0]
        key = self.args["auth_tokens_file"][len(mount) + 1:]
        self.assertIn(key, secret["stringData"])
        for line in secret["stringData"][key].splitlines():
            line = line.split("#", 1)[0].split()
            if line:
                self.assertEqual(len(line), 2)
                self.assertIn(line[0], ("reader", "writer"))


if __name__ == "__main__":
    BINARY = sys.argv[1]
    MANIFESTS = sys.argv[2:]
    unittest.main(argv=sys.argv[:1], verbosity=2)
