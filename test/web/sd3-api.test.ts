/**
 * The studio serves a StableDiffusion3Pipeline (the bundled emoji-mmdit): a prompt is encoded as SD3
 * encodes it (penultimate CLIP states and the pooled vector) in the sampling worker's per-shape copy
 * of the pipeline, and the job ends in a PNG whose pixels follow the prompt.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate } from "./client.ts";

let studio: Studio;

before(async () => {
  studio = await startStudio({ models: ["emoji-mmdit"], runs: [], port: 0 });
});

after(async () => {
  await studio.close();
});

test("an SD3 pipeline generates from a prompt in the studio (its pooled text reaches the transformer)", async () => {
  const body = { model: "emoji-mmdit", prompt: "red apple, google style", steps: 2, count: 1, seed: 3 };
  const r = await generate(studio.url, body);
  assert.equal(r.status, 200, r.error);
  const last = r.events.at(-1)!;
  assert.equal(last.event, "done", JSON.stringify(last.data));
  assert.deepEqual(
    r.events.filter((e) => e.event === "step").map((e) => e.data["i"]),
    [0, 1],
  );
  const image = async (prompt: string) => {
    const g = await generate(studio.url, { ...body, prompt });
    const done = g.events.at(-1)!;
    assert.equal(done.event, "done", JSON.stringify(done.data));
    const url = new URL(String(done.data["image"]), studio.url);
    return new Uint8Array(await (await fetch(url)).arrayBuffer());
  };
  // the same request the same PNG, another prompt another one
  const a = await image(body.prompt);
  assert.deepEqual(await image(body.prompt), a);
  assert.notDeepEqual(await image("grinning face, twitter style"), a);
});
