// Validates the manifests of deploy/kubernetes/ without a cluster: every
// object against the Kubernetes API schemas (kubernetes-models, and the
// Prometheus Operator's for the ServiceMonitor), then what the schemas
// cannot see: the names and labels that tie the objects together, the
// shard count against the replicas, and the hardening docs/many-agents.md promises.
//
//   node validate.mjs [--extract DIR]
//
// With --extract, every file the StatefulSet mounts (ConfigMap and Secret
// keys) is also written below DIR at its mount path, so that the test can
// run `dbcanary config check` on the configuration exactly as a pod sees it.
// Exit 0 when all is well; otherwise each problem on its own line, exit 1.

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse } from "yaml";
import * as apps from "kubernetes-models/apps/v1";
import * as core from "kubernetes-models/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const models = { "apps/v1": apps, v1: core, "monitoring.coreos.com/v1": monitoring };
const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

const extractAt = process.argv.indexOf("--extract");
const extractDir = extractAt > 0 ? process.argv[extractAt + 1] : null;

// Every manifest, and kustomization.yaml listing each of them.
const files = readdirSync(root).filter((f) => f.endsWith(".yaml")).sort();
const kustomization = parse(readFileSync(join(root, "kustomization.yaml"), "utf8"));
const listed = new Set(kustomization.resources ?? []);
const objects = [];
for (const file of files) {
  if (file === "kustomization.yaml") continue;
  if (!listed.has(file)) problem(file, "not listed in kustomization.yaml");
  listed.delete(file);
  for (const doc of parseAllDocuments(readFileSync(join(root, file), "utf8"))) {
    if (doc.errors.length) {
      problem(file, `YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj) objects.push({ file, obj });
  }
}
for (const missing of listed) problem("kustomization.yaml", `lists ${missing}, which does not exist`);

for (const { file, obj } of objects) {
  const where = `${file}: ${obj.kind}/${obj.metadata?.name}`;
  const Model = models[obj.apiVersion]?.[obj.kind];
  if (!Model) {
    problem(where, `no schema for ${obj.apiVersion} ${obj.kind}`);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    problem(where, e.message);
  }
}

const find = (kind, name) => objects.find((o) => o.obj.kind === kind && (!name || o.obj.metadata?.name === name))?.obj;
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);

const sts = find("StatefulSet");
const service = find("Service");
const monitor = find("ServiceMonitor");
if (!sts || !service || !monitor) {
  problem("deploy/kubernetes", "a StatefulSet, a Service and a ServiceMonitor are needed");
} else {
  const pod = sts.spec.template;
  const container = pod.spec.containers[0];
  if (!matches(sts.spec.selector.matchLabels, pod.metadata.labels)) problem("statefulset", "selector does not match the pod labels");
  if (sts.spec.serviceName !== service.metadata.name) problem("statefulset", `serviceName ${sts.spec.serviceName} is not the Service`);
  if (!matches(service.spec.selector, pod.metadata.labels)) problem("service", "selector does not match the pods");
  if (!matches(monitor.spec.selector.matchLabels, service.metadata.labels)) problem("servicemonitor", "selector does not match the Service");
  // The operator names the job after the Service (no jobLabel): the
  // bundled alert rules expect job="dbcanary".
  if (service.metadata.name !== "dbcanary" || monitor.spec.jobLabel) problem("servicemonitor", 'the job must be "dbcanary" (the alert rules select it)');
  const portNames = new Set(service.spec.ports.map((p) => p.name));
  for (const e of monitor.spec.endpoints) {
    if (!portNames.has(e.port)) problem("servicemonitor", `port ${e.port} is not a port of the Service`);
  }
  const containerPorts = new Set(container.ports.map((p) => p.name));
  for (const p of service.spec.ports) {
    if (!containerPorts.has(p.targetPort)) problem("service", `targetPort ${p.targetPort} is not a container port`);
  }

  // Hardening: non-root, read-only root file system, no privilege gain.
  const sc = container.securityContext ?? {};
  if (pod.spec.securityContext?.runAsNonRoot !== true) problem("statefulset", "pods must run as non-root");
  if (sc.readOnlyRootFilesystem !== true) problem("statefulset", "the root file system must be read-only");
  if (sc.allowPrivilegeEscalation !== false) problem("statefulset", "allowPrivilegeEscalation must be false");
  if (!sc.capabilities?.drop?.includes("ALL")) problem("statefulset", "every capability must be dropped");
  for (const r of ["cpu", "memory"]) {
    if (!container.resources?.requests?.[r]) problem("statefulset", `no ${r} request`);
  }

  // Every volume's ConfigMap or Secret exists; the configuration the agent
  // is given is mounted; its shard count is the replica count.
  const configPath = container.args[container.args.indexOf("--config") + 1];
  const mounted = [];
  for (const v of pod.spec.volumes) {
    const source = v.configMap ? find("ConfigMap", v.configMap.name) : v.secret ? find("Secret", v.secret.secretName) : null;
    const mount = container.volumeMounts.find((m) => m.name === v.name);
    if (!source) {
      problem("statefulset", `volume ${v.name}: its ConfigMap or Secret is not among the manifests`);
      continue;
    }
    if (!mount) {
      problem("statefulset", `volume ${v.name} is not mounted`);
      continue;
    }
    const data = { ...(source.data ?? {}), ...(source.stringData ?? {}) };
    for (const [key, text] of Object.entries(data)) mounted.push({ path: `${mount.mountPath}/${key}`, text });
  }
  const config = mounted.find((m) => m.path === configPath);
  if (!config) {
    problem("statefulset", `--config ${configPath} is not a mounted file`);
  } else {
    const shard = /^\s*shard\s*=\s*"ordinal\/(\d+)"/m.exec(config.text);
    if (!shard) problem(configPath, 'the agent.shard of a StatefulSet is "ordinal/n"');
    else if (Number(shard[1]) !== sts.spec.replicas) {
      problem(configPath, `shard ordinal/${shard[1]} but ${sts.spec.replicas} replicas`);
    }
  }
  if (extractDir) {
    for (const m of mounted) {
      const path = join(extractDir, m.path);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, m.text);
    }
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  process.exit(1);
}
console.log(`ok: ${objects.length} objects in ${files.length - 1} manifests`);
