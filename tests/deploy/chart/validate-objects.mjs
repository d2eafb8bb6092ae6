// Validates Kubernetes objects offline, two ways, and prints what each pass said per object.
//
//   node validate-objects.mjs NODE_MODULES WORK_DIR OBJECTS.json
//
// OBJECTS.json: [{"source": "...", "object": {...}}, ...]. For each object:
//  1. the kubernetes-models class for its apiVersion/kind (core, cert-manager, prometheus-operator
//     models) runs validate(): the OpenAPI/CRD JSON schema (types, required fields, enums, formats);
//  2. a TypeScript file types the object literal with the model's interface, and `tsc --strict`
//     checks it: an object literal may only name known properties, so unknown fields (a typo such
//     as `comand`, a field from another version) are errors that the JSON schemas let through.
// Output (stdout, JSON): [{"module": path or null, "validate": null or error, "tsc": [errors]}].
// Deciding what is acceptable is the caller's job (chartcheck.py), so negative cases can be mixed
// in. WORK_DIR must be inside the folder that holds NODE_MODULES (module resolution).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, workDir, objectsFile] = process.argv.slice(2);
if (!objectsFile) {
  console.error("usage: validate-objects.mjs NODE_MODULES WORK_DIR OBJECTS.json");
  process.exit(2);
}
const items = JSON.parse(readFileSync(objectsFile, "utf8"));

// Packages that hold models, tried in order; each lays models out as <group>/<version>/<Kind>.
const PACKAGES = [
  "kubernetes-models",
  "@kubernetes-models/cert-manager",
  "@kubernetes-models/prometheus-operator",
];

function modulePath(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind)) {
    return null;
  }
  const parts = apiVersion.split("/");
  const dir = parts.length === 1 ? parts[0] : `${parts[0]}/${parts[1]}`;
  for (const pkg of PACKAGES) {
    const rel = `${pkg}/${dir}/${kind}`;
    if (existsSync(path.join(nodeModules, `${rel}.js`)) &&
        existsSync(path.join(nodeModules, `${rel}.d.ts`))) {
      return rel;
    }
  }
  return null;
}

const results = [];
for (const item of items) {
  const obj = item.object ?? {};
  const rel = modulePath(obj.apiVersion, obj.kind);
  const result = { module: rel, validate: null, tsc: [] };
  if (rel === null) {
    result.validate = `no model for apiVersion ${obj.apiVersion} kind ${obj.kind}`;
  } else {
    const mod = await import(pathToFileURL(path.join(nodeModules, `${rel}.js`)).href);
    const Model = mod[obj.kind];
    try {
      new Model(obj).validate();
    } catch (err) {
      result.validate = String(err?.message ?? err);
    }
  }
  results.push(result);
}

// One .ts file, one object per line, so tsc's line numbers map back to the objects.
mkdirSync(workDir, { recursive: true });
const imports = [];
const lines = [];
const aliases = new Map();
items.forEach((item, i) => {
  const rel = results[i].module;
  if (rel === null) {
    lines.push(`// ${i}: no model`);
    return;
  }
  if (!aliases.has(rel)) {
    const alias = `T${aliases.size}`;
    aliases.set(rel, alias);
    imports.push(`import type { I${item.object.kind} as ${alias} } from "${rel}";`);
  }
  lines.push(`export const o${i}: ${aliases.get(rel)} = ${JSON.stringify(item.object)};`);
});
// Imports go on one line so object i sits on line i + 2.
const tsFile = path.join(workDir, "objects.ts");
writeFileSync(tsFile, `${imports.join(" ")}\n// objects\n${lines.join("\n")}\n`);
writeFileSync(path.join(workDir, "tsconfig.json"), JSON.stringify({
  compilerOptions: {
    strict: true, noEmit: true, target: "es2022", module: "nodenext",
    moduleResolution: "nodenext", skipLibCheck: true, types: [],
  },
  files: ["objects.ts"],
}));
const tsc = path.join(nodeModules, ".bin", "tsc");
let out = "";
try {
  execFileSync(tsc, ["-p", workDir, "--pretty", "false"], { encoding: "utf8", stdio: "pipe" });
} catch (err) {
  out = `${err.stdout ?? ""}${err.stderr ?? ""}`;
  if (!out.trim()) throw err;
}
let last = null;  // continuation lines (indented) belong to the error before them
for (const line of out.split("\n")) {
  if (!line.trim()) continue;
  const m = line.match(/objects\.ts\((\d+),(\d+)\): (.*)$/);
  if (!m) {
    if (last && /^\s/.test(line)) {
      last.push(line.trim());
    } else {
      results.push({ module: null, validate: null, tsc: [line], stray: true });
      last = null;
    }
    continue;
  }
  const index = Number(m[1]) - 3;
  if (index >= 0 && index < items.length) {
    results[index].tsc.push(m[3]);
    last = results[index].tsc;
  } else {
    results.push({ module: null, validate: null, tsc: [line], stray: true });
    last = null;
  }
}
process.stdout.write(JSON.stringify(results));
