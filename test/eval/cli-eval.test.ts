// `diffuse eval`: reads samples.safetensors (or its directory), prints the table or JSON, and
// refuses bad input with messages that name the problem.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/eval.ts";
import { loadMnist } from "../../src/data/mnist.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { HostTensor } from "../../src/tensor/host.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-eval-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** 100 held-out digits (10 per class) as `diffuse sample` would write them. */
function digits() {
  const d = loadMnist({ split: "test", size: 32 });
  const idx = Array.from({ length: 100 }, (_, i) => (i % 10) * 100 + 2 * Math.floor(i / 10) + 1);
  const images = new Float32Array(100 * 1024);
  idx.forEach((k, i) => {
    images.set(d.images.subarray(k * 1024, (k + 1) * 1024), i * 1024);
  });
  return {
    images: new HostTensor(images, [100, 1, 32, 32]),
    labels: HostTensor.int64(idx.map((k) => d.labels![k]!)),
  };
}

function write(name: string, tensors: Record<string, HostTensor>): string {
  const path = join(dir, name);
  writeSafetensors(path, tensors);
  return path;
}

async function output(argv: string[]): Promise<string> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    await run(argv);
  } finally {
    console.log = log;
  }
  return lines.join("\n");
}

test("a samples directory gives the table; --json the figures", async () => {
  const sub = join(dir, "run");
  mkdirSync(sub);
  writeSafetensors(join(sub, "samples.safetensors"), digits());
  const table = await output(["--samples", sub]);
  assert.match(table, /conditional accuracy\s+\d+\.\d%/);
  assert.match(table, /Fréchet distance\s+\d+\.\d{3}\s+\d+\.\d{3}/);
  assert.match(table, /ratio to real-vs-real: \d+\.\d\d×/);
  const json = JSON.parse(await output(["--samples", join(sub, "samples.safetensors"), "--json"])) as Record<
    string,
    unknown
  >;
  assert.equal(json["n"], 100);
  assert.ok((json["accuracy"] as number) >= 0.95);
  assert.equal(typeof json["frechetRealVsReal"], "number");
  assert.equal(json["frechetSize"], 100);
});

test("errors name the missing file, tensor, shape or label problem", async () => {
  const { images, labels } = digits();
  await assert.rejects(
    run([]),
    (e: Error) => e instanceof UsageError && /--samples is required/.test(e.message),
  );
  await assert.rejects(run(["--samples", join(dir, "nope.safetensors")]), /nope\.safetensors does not exist/);
  await assert.rejects(run(["--samples", dir]), /holds no samples\.safetensors/);
  await assert.rejects(
    run(["--samples", write("named.safetensors", { x: images, labels })]),
    /has no "images" tensor \(it has "labels", "x"\)/,
  );
  await assert.rejects(
    run([
      "--samples",
      write("rgb.safetensors", { images: new HostTensor(new Float32Array(2 * 3 * 1024), [2, 3, 32, 32]) }),
    ]),
    /"images" has shape \[2,3,32,32\]; expected \[N, 1, 32, 32\]/,
  );
  await assert.rejects(
    run([
      "--samples",
      write("flabels.safetensors", { images, labels: new HostTensor(new Float32Array(100), [100]) }),
    ]),
    /"labels" is F32; expected integer class indices/,
  );
  await assert.rejects(
    run([
      "--samples",
      write("short.safetensors", { images, labels: HostTensor.int64(new Array(99).fill(1)) }),
    ]),
    /"labels" has shape \[99\]; expected \[100\]/,
  );
  await assert.rejects(
    run([
      "--samples",
      write("range.safetensors", { images, labels: HostTensor.int64(new Array(100).fill(12)) }),
    ]),
    /label 0 is 12; MNIST labels must be integers from 0 to 9/,
  );
  await assert.rejects(run(["--samples", dir, "--bogus"]), UsageError);
});
