// Release receipts checked by the client (verifyReceipt), against the real
// appliance (KW_URL, see appliance.test.js) and against receipts the Go
// receipt package signed (KW_RECEIPT_FIXTURES, made by the Go test
// TestTypeScriptClient); each verdict is cross-checked with
// `keywarden receipt verify` (KW_KEYWARDEN_BIN).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Keywarden, ReceiptError, firebaseOwner, parseReceipt, verifyReceipt } from "../dist/index.js";

const url = process.env.KW_URL;
const tokens = JSON.parse(process.env.KW_TOKENS ?? "{}");
const fixtures = process.env.KW_RECEIPT_FIXTURES ? JSON.parse(process.env.KW_RECEIPT_FIXTURES) : undefined;
const bin = process.env.KW_KEYWARDEN_BIN;
const skip = url && fixtures ? false : "KW_URL is not set: run through `go test ./internal/e2e -run TestTypeScriptClient`";
const kw = url ? new Keywarden({ baseUrl: url }) : undefined;
const dir = mkdtempSync(join(tmpdir(), "kw-receipt-"));
let files = 0;

/** The receipt's fields (either encoding), as version 1 JSON: edits are made on it. */
const decode = (h) => ({ ...parseReceipt(h), v: 1 });
const encode = (o) => Buffer.from(JSON.stringify(o), "utf8").toString("base64url");
/** s with its character at i changed (inside the string: the last base64url character may carry only padding bits). */
const flip = (s, i = 5) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
const flipHex = (s, i = 5) => s.slice(0, i) + (s[i] === "0" ? "1" : "0") + s.slice(i + 1);

async function refused(p, what) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ReceiptError, `${what}: not a ReceiptError: ${e}`);
    return e;
  }
  assert.fail(`${what}: the receipt verified`);
}

/** `keywarden receipt verify` on receipt with key (a file's contents): true when it verifies. */
function goVerifies(receipt, key, owner) {
  const n = files++;
  const rf = join(dir, `receipt-${n}.txt`), kf = join(dir, `key-${n}`);
  writeFileSync(rf, receipt);
  writeFileSync(kf, key);
  const args = ["receipt", "verify", "-key", kf];
  if (owner !== undefined) args.push("-owner", owner);
  const r = spawnSync(bin, [...args, rf], { encoding: "utf8" });
  assert.ok(r.status === 0 || r.status === 1, `keywarden receipt verify exited ${r.status}: ${r.stderr}`);
  return r.status === 0;
}

/** Edits of a decoded receipt an attacker would try: every signed or hashed part. */
function edits(r) {
  const e = {
    "stmt.action": (x) => { x.stmt.action = "firebase.store"; },
    "stmt.outcome": (x) => { x.stmt.outcome = "failure"; },
    "stmt.seq": (x) => { x.stmt.seq += 1; },
    "stmt.time": (x) => { x.stmt.time = "2030-01-01T00:00:00Z"; },
    "stmt.line": (x) => { x.stmt.line = flipHex(x.stmt.line); },
    "stmt.owner_hash": (x) => { x.stmt.owner_hash = flip(x.stmt.owner_hash); },
    "stmt.salt": (x) => { x.stmt.salt = flip(x.stmt.salt); },
    "stmt.key_version": (x) => { x.stmt.key_version = "999"; },
    "stmt.request_id": (x) => { x.stmt.request_id = "forged"; },
    "stmt.method": (x) => { x.stmt.method = "PASSKEY"; },
    "stmt.node": (x) => { x.stmt.node = "other"; },
    "index": (x) => { x.index += 1; },
    "path: one more": (x) => { x.path.push("00".repeat(32)); },
    "batch.root": (x) => { x.batch.root = flipHex(x.batch.root); },
    "batch.first": (x) => { x.batch.first += 1; },
    "batch.last": (x) => { x.batch.last += 1; },
    "batch.size": (x) => { x.batch.size += 1; },
    "batch.time": (x) => { x.batch.time = "2030-01-01T00:00:00Z"; },
    "batch_sig": (x) => { x.batch_sig = flip(x.batch_sig); },
    "cert.pub": (x) => { x.cert.pub = flip(x.cert.pub); },
    "cert.issued": (x) => { x.cert.issued = "2020-01-01T00:00:00Z"; },
    "cert.signer": (x) => { x.cert.signer = flipHex(x.cert.signer); },
    "cert.sig": (x) => { x.cert.sig = flip(x.cert.sig, 20); },
    "cert.node": (x) => { x.cert.node = "other"; },
    "v": (x) => { x.v = 2; },
  };
  if (r.path.length > 0) {
    e["path[0]"] = (x) => { x.path[0] = flipHex(x.path[0]); };
    e["path: one less"] = (x) => { x.path.pop(); };
  }
  return e;
}

describe("release receipts", { skip }, () => {
  test("a Firebase release's receipt verifies with GET /v1/appliance-keys; edits and another owner are refused (in Go too)", async () => {
    const key = webcrypto.getRandomValues(new Uint8Array(32));
    await kw.firebase.store(tokens.alice, key);
    const { key: back, receipt } = await kw.firebase.releaseWithReceipt(tokens.alice);
    assert.deepEqual(back, key);
    assert.ok(receipt, "the release carries no Keywarden-Receipt header");
    const keys = await kw.applianceKeys();
    const alice = firebaseOwner(tokens.alice), bob = firebaseOwner(tokens.bob);

    const v = await verifyReceipt(receipt, keys, { owner: alice });
    assert.equal(v.statement.outcome, "success");
    assert.equal(v.statement.method, "FIREBASE");
    assert.equal(v.signingKeyId, keys.signing_key_id);
    await verifyReceipt(receipt, keys); // without an owner
    await verifyReceipt(receipt, keys.signing_key_pem, { owner: alice }); // the key as PEM
    assert.ok(goVerifies(receipt, JSON.stringify(keys), alice), "Go refuses the receipt the client verified");

    // Another owner: refused here and by Go.
    assert.match((await refused(verifyReceipt(receipt, keys, { owner: bob }), "bob")).message, /not about this owner/);
    assert.equal(goVerifies(receipt, JSON.stringify(keys), bob), false, "Go verified the receipt for bob");

    // Each edit is refused, here and by Go.
    const orig = decode(receipt);
    for (const [what, edit] of Object.entries(edits(orig))) {
      const x = structuredClone(orig);
      edit(x);
      await refused(verifyReceipt(encode(x), keys, { owner: alice }), what);
      assert.equal(goVerifies(encode(x), JSON.stringify(keys), alice), false, `Go verified the receipt with ${what} edited`);
    }
    // The header is the compact encoding; the same receipt as version 1
    // JSON (base64url or raw) verifies too.
    assert.equal(parseReceipt(receipt).v, 2);
    await verifyReceipt(encode(orig), keys, { owner: alice });
    await verifyReceipt(JSON.stringify(orig), keys, { owner: alice });
    await refused(verifyReceipt(receipt.slice(0, -10), keys), "truncated");
    await refused(verifyReceipt("not a receipt", keys), "garbage");
    await refused(verifyReceipt(undefined, keys), "no header (a release without a receipt)");

    // A key the receipt's batch key was not certified by (the fixtures'
    // signing key): refused. A document whose key id is not its key's: refused.
    assert.match((await refused(verifyReceipt(receipt, fixtures.pem), "another key")).message, /not certified by a trusted appliance key/);
    await assert.rejects(verifyReceipt(receipt, { ...keys, signing_key_id: flipHex(keys.signing_key_id) }), /signing_key_id/);
    await verifyReceipt(receipt, [fixtures.pem, keys], { owner: alice }); // one of several trusted keys
    await kw.firebase.delete(tokens.alice);
  });

  test("receipts signed by the Go package: every path of an odd batch, escaped fields, the batch key's time", async () => {
    assert.ok(fixtures.receipts.length > 4);
    for (const [i, f] of fixtures.receipts.entries()) {
      const r = decode(f.receipt);
      assert.equal(r.index, i);
      if (f.ok) {
        const v = await verifyReceipt(f.receipt, fixtures.pem, { owner: f.owner });
        assert.equal(v.statement.seq, r.stmt.seq, f.why);
        assert.ok(goVerifies(f.receipt, fixtures.pem, f.owner), `Go refuses fixture ${i} (${f.why})`);
        await refused(verifyReceipt(f.receipt, fixtures.pem, { owner: fixtures.receipts[(i + 1) % fixtures.receipts.length].owner }), `fixture ${i} with another owner`);
        for (const [what, edit] of Object.entries(edits(r))) {
          const x = structuredClone(r);
          edit(x);
          await refused(verifyReceipt(encode(x), fixtures.pem, { owner: f.owner }), `fixture ${i}: ${what}`);
        }
      } else {
        const e = await refused(verifyReceipt(f.receipt, fixtures.pem, { owner: f.owner }), `fixture ${i} (${f.why})`);
        assert.match(e.message, /older than its batch key/, f.why);
      }
    }
    assert.ok(fixtures.receipts.some((f) => !f.ok) && fixtures.receipts.some((f) => f.ok));
  });
});
