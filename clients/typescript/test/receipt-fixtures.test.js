// Receipts signed by the Go receipt package and committed with it
// (receipt/testdata): version 1 (JSON, as issued before the compact
// encoding) and version 2 (the compact binary encoding releases send).
// Offline: no appliance needed.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ReceiptError, parseReceipt, verifyReceipt } from "../dist/index.js";

const load = (v) => JSON.parse(readFileSync(new URL(`../../../receipt/testdata/receipts-v${v}.json`, import.meta.url), "utf8"));
const toJSONHeader = (r) => Buffer.from(JSON.stringify({ ...r, v: 1 }), "utf8").toString("base64url");

async function refused(p, what) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ReceiptError, `${what}: not a ReceiptError: ${e}`);
    return e;
  }
  assert.fail(`${what}: the receipt verified`);
}

describe("receipt fixtures", () => {
  for (const v of [1, 2]) {
    test(`version ${v} receipts verify for their owner and no other`, async () => {
      const fx = load(v);
      assert.ok(fx.receipts.length > 4);
      for (const [i, f] of fx.receipts.entries()) {
        const r = parseReceipt(f.receipt);
        assert.equal(r.v, v);
        assert.equal(r.index, i);
        const got = await verifyReceipt(f.receipt, fx.pem, { owner: f.owner });
        assert.equal(got.statement.seq, r.stmt.seq);
        await refused(verifyReceipt(f.receipt, fx.pem, { owner: f.owner + "x" }), `${i}: another owner`);
      }
    });
  }

  test("a compact receipt is the same receipt as its JSON, and every byte of it is checked", async () => {
    const fx = load(2);
    const f = fx.receipts[3];
    const r = parseReceipt(f.receipt);
    // The version names only the encoding: as version 1 JSON it verifies too.
    await verifyReceipt(toJSONHeader(r), fx.pem, { owner: f.owner });
    await refused(verifyReceipt(Buffer.from(JSON.stringify(r), "utf8").toString("base64url"), fx.pem), "JSON claiming version 2");
    const raw = Buffer.from(f.receipt, "base64url");
    for (let j = 0; j < raw.length; j++) {
      const ed = Buffer.from(raw);
      ed[j] ^= 0x01;
      await refused(verifyReceipt(ed.toString("base64url"), fx.pem, { owner: f.owner }), `byte ${j} flipped`);
    }
    await refused(verifyReceipt(raw.subarray(0, raw.length - 1).toString("base64url"), fx.pem), "truncated");
    await refused(verifyReceipt(Buffer.concat([raw, Buffer.from([0])]).toString("base64url"), fx.pem), "a byte after its end");
    // Half the size of the JSON encoding.
    assert.ok(f.receipt.length * 2 < toJSONHeader(r).length * 1.1, `${f.receipt.length} vs ${toJSONHeader(r).length}`);
  });
});
