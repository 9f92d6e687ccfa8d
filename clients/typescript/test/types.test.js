// The committed src/types.gen.ts is what openapi-typescript makes of
// ../../openapi.yaml now: a document change without `npm run gen` fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("src/types.gen.ts is generated from the current openapi.yaml", () => {
  const out = join(mkdtempSync(join(tmpdir(), "kw-types-")), "types.gen.ts");
  const r = spawnSync(process.execPath, ["node_modules/openapi-typescript/bin/cli.js", "../../openapi.yaml", "-o", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync("src/types.gen.ts", "utf8"), readFileSync(out, "utf8"),
    "src/types.gen.ts is stale: run `npm run gen` in clients/typescript and commit it");
});
