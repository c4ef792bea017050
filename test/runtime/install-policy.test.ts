// The install is quiet and fetches nothing from outside the npm registry: every dependency with an
// install script (package-lock.json's hasInstallScript) is covered by package.json's allowScripts
// (npm 11 warns about the others), onnxruntime-node's — which would download CUDA libraries from NuGet —
// is denied, and .npmrc sets no key npm does not know (npm warns "Unknown project config").
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { allowScripts?: Record<string, boolean> };
const lock = JSON.parse(readFileSync("package-lock.json", "utf8")) as {
  packages: Record<string, { hasInstallScript?: boolean }>;
};

test("every install script in the lockfile is approved or denied in allowScripts; onnxruntime-node's is denied", () => {
  const policy = pkg.allowScripts ?? {};
  const withScripts = Object.entries(lock.packages)
    .filter(([, v]) => v.hasInstallScript)
    .map(([k]) => k.slice(k.lastIndexOf("node_modules/") + "node_modules/".length));
  assert.ok(withScripts.length > 0);
  for (const name of withScripts)
    assert.ok(
      name in policy,
      `${name} has an install script that allowScripts does not cover (npm would warn)`,
    );
  assert.equal(
    policy["onnxruntime-node"],
    false,
    "onnxruntime-node's postinstall downloads CUDA binaries from NuGet",
  );
});

test(".npmrc sets no key npm does not know", () => {
  let text = "";
  try {
    text = readFileSync(".npmrc", "utf8");
  } catch {
    return; // no .npmrc: nothing to warn about
  }
  const keys = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith(";"))
    .map((l) => l.split("=")[0]!.trim());
  assert.deepEqual(
    keys.filter((k) => k.startsWith("onnxruntime-node")),
    [],
    "a package's own flag in .npmrc makes npm warn",
  );
});
