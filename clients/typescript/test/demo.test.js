// The demo page's copy of the client (server/demo/static/keywarden.js,
// embedded in dev builds) is what `npm run demo` makes of src/ now.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("server/demo/static/keywarden.js is built from the current src/", () => {
  const out = join(mkdtempSync(join(tmpdir(), "kw-demo-")), "keywarden.js");
  const pkg = JSON.parse(readFileSync("package.json", "utf8"));
  const args = pkg.scripts.demo.match(/"[^"]*"|\S+/g).slice(1).map((a) => a.replace(/^"|"$/g, ""))
    .map((a) => (a.startsWith("--outfile=") ? "--outfile=" + out : a));
  const r = spawnSync("node_modules/.bin/esbuild", args, { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync("../../server/demo/static/keywarden.js", "utf8"), readFileSync(out, "utf8"),
    "server/demo/static/keywarden.js is stale: run `npm run demo` in clients/typescript and commit it");
});
