// The studio's server under requests a browser would not send: no Host header, paths that name a
// folder where a file is expected, bodies that never finish, more connections than it takes.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], runs: [fx.runsDir], port: 0 });
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

/** Sends `text` on a raw socket and resolves with everything the server answers until it closes. */
function raw(url: string, text: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(text));
    let got = "";
    socket.on("data", (b: Buffer) => {
      got += b.toString();
    });
    socket.on("end", () => resolve(got));
    socket.on("error", reject);
  });
}

test("a request without a Host header is told it needs one", async () => {
  const answer = await raw(studio.url, "GET /api/info HTTP/1.0\r\n\r\n");
  assert.match(answer, /^HTTP\/1\.1 400 /);
  assert.match(answer, /requests to this studio need a Host header naming 127\.0\.0\.1 or localhost/);
  assert.doesNotMatch(answer, /undefined/);
});
