// A request's names and values are quoted as JSON in the studio's answers, so a newline in one
// cannot split the message (found by the fault harness's fuzzer: an unknown model "\n\r\t").
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { Catalog } from "../../src/web/catalog.ts";
import { HttpError } from "../../src/web/http.ts";
import { validateGenerate } from "../../src/web/validate.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let catalog: Catalog;
before(async () => {
  fx = await makeFixture();
  catalog = new Catalog({ models: [fx.modelDir] });
});
after(() => rmSync(fx.root, { recursive: true, force: true }));

test("an unknown model or field with a newline in its name is refused in one line", async () => {
  for (const [body, re] of [
    [{ model: "\n\r\t" }, /^unknown model "\\n\\r\\t"; this studio serves "tiny"/],
    [{ model: "tiny", "a\nb": 1 }, /^unknown field "a\\nb"; the fields are /],
  ] as const) {
    await assert.rejects(validateGenerate(body, catalog), (e: Error) => {
      assert.ok(e instanceof HttpError && e.status === 400);
      assert.doesNotMatch(e.message, /\n/);
      assert.match(e.message, re);
      return true;
    });
  }
});
