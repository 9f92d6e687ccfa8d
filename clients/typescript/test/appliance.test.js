// The client against a real appliance (keywarden dev), started by the Go
// test internal/e2e TestTypeScriptClient, which passes KW_URL (a proxy that
// checks every exchange against openapi.yaml), Firebase ID tokens minted
// by a Google-format issuer (KW_TOKENS) and a session token.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { Keywarden, KeywardenError, SUITE_MLKEM768_X25519 } from "../dist/index.js";

const url = process.env.KW_URL;
const tokens = JSON.parse(process.env.KW_TOKENS ?? "{}");
const skip = url ? false : "KW_URL is not set: run through `go test ./internal/e2e -run TestTypeScriptClient`";
const kw = url ? new Keywarden({ baseUrl: url }) : undefined;
const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));

async function refused(p) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof KeywardenError, "not a KeywardenError: " + e);
    return e;
  }
  assert.fail("the appliance did not refuse");
}

describe("appliance", { skip }, () => {
  test("appliance key", async () => {
    const k = await kw.applianceKey();
    assert.equal(k.suite, SUITE_MLKEM768_X25519);
    assert.equal(k.publicKey.length, 1216);
  });

  test("Firebase: store, release (sealed both ways and clear), replace sealed, delete", async () => {
    const key = random(32);
    assert.deepEqual(await kw.firebase.store(tokens.alice, key, { sealed: false }), { replaced: false });
    assert.deepEqual(await kw.firebase.release(tokens.alice), key, "ML-KEM-768+X25519 release");
    assert.deepEqual(await kw.firebase.release(tokens.alice, { sealed: "x25519" }), key, "X25519 release");
    assert.deepEqual(await kw.firebase.release(tokens.alice, { sealed: false }), key, "clear release");

    const key2 = random(64);
    assert.deepEqual(await kw.firebase.store(tokens.alice, key2), { replaced: true }, "store sealed to the appliance key");
    assert.deepEqual(await kw.firebase.release(tokens.alice), key2);

    // Another user sees nothing of alice's.
    const e = await refused(kw.firebase.release(tokens.bob));
    assert.equal(e.status, 404);
    assert.equal(e.code, "not_found");

    await kw.firebase.delete(tokens.alice);
    assert.equal((await refused(kw.firebase.release(tokens.alice))).code, "not_found");
  });

  test("a key sealed for another owner does not open", async () => {
    // Sealed for bob's owner, sent with dave's token: hpke_open_failed.
    const body = await kw.sealForStore(random(16), "/v1/firebase/key", "firebase:proj-ts//ts-bob", "FIREBASE");
    const e = await refused(kw.request("PUT", "/v1/firebase/key", { token: tokens.dave, body }));
    assert.equal(e.status, 400);
    assert.equal(e.code, "hpke_open_failed");
  });

  test("typed errors: code, status, request id", async () => {
    const e = await refused(kw.firebase.release(tokens.expired));
    assert.equal(e.status, 401);
    assert.equal(e.code, "token_expired");
    assert.ok(e.requestId, "no request id");
    assert.equal(e.retryable, false);
    const bad = await refused(kw.firebase.release("x.eyJhdWQiOiJwcm9qLXRzIiwic3ViIjoieCJ9.y"));
    assert.equal(bad.status, 401);
  });

  test("Retry-After: attestation quotes are rate-limited", async () => {
    const nonce = Buffer.from(random(16)).toString("hex");
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => kw.attestation(nonce)));
    const ok = results.filter((r) => r.status === "fulfilled");
    const limited = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    assert.ok(ok.length > 0, "no quote at all");
    assert.ok(ok[0].value.quote && ok[0].value.boundKey, "evidence without quote or bound key");
    assert.ok(limited.length > 0, "40 quotes at once were not rate-limited");
    for (const e of limited) {
      assert.ok(e instanceof KeywardenError);
      assert.equal(e.status, 429);
      assert.equal(e.code, "rate_limited");
      assert.ok(e.retryAfter >= 1, "no Retry-After");
      assert.equal(e.retryable, true);
    }
  });
});

describe("PIN", { skip }, async () => {
  const session = process.env.KW_SESSION_TOKEN;
  // The PIN routes come with the PIN feature: an appliance without them
  // answers 404 route_not_found, and this part is skipped.
  let has = false;
  if (kw) {
    try {
      await kw.pin.status(session);
      has = true;
    } catch (e) {
      if (!(e instanceof KeywardenError && e.code === "route_not_found")) throw e;
    }
  }
  const skipPin = has ? false : "the appliance has no PIN routes (/v1/pin): skipped";

  test("register, wrong PIN counts down, right PIN releases (sealed and clear)", { skip: skipPin }, async () => {
    const key = random(32);
    await kw.pin.register({ token: session, pin: "123456", guessLimit: 3, key }); // sealed to the appliance key
    const e = await refused(kw.pin.recover({ token: session, pin: "000000" }));
    assert.equal(e.code, "pin_incorrect");
    assert.equal(e.guessesRemaining, 2);
    assert.deepEqual(await kw.pin.recover({ token: session, pin: "123456" }), key);
    assert.deepEqual(await kw.pin.recover({ token: session, pin: "123456", sealed: "x25519" }), key);
    assert.deepEqual(await kw.pin.recover({ token: session, pin: "123456", sealed: false }), key);
    const st = await kw.pin.status(session);
    assert.equal(st.registered, true);
    assert.equal(st.guessesRemaining, 3);
    // A second registration replaces it (right after a recovery with the
    // old PIN), the key in the clear this time.
    const key2 = random(16);
    assert.equal((await kw.pin.register({ token: session, pin: "654321", key: key2, sealed: false })).replaced, true);
    assert.deepEqual(await kw.pin.recover({ token: session, pin: "654321" }), key2);
    await kw.pin.delete(session);
    assert.equal((await refused(kw.pin.recover({ token: session, pin: "654321" }))).code, "pin_not_registered");
  });

  test("the appliance generates the key when none is given (Firebase owner); the last wrong guess locks", { skip: skipPin }, async () => {
    const { key } = await kw.pin.register({ token: tokens.dave, pin: "2468", guessLimit: 2 });
    assert.equal(key.length, 32);
    assert.deepEqual(await kw.pin.recover({ token: tokens.dave, pin: "2468" }), key);
    assert.equal((await refused(kw.pin.recover({ token: tokens.dave, pin: "1111" }))).guessesRemaining, 1);
    const locked = await refused(kw.pin.recover({ token: tokens.dave, pin: "1111" }));
    assert.ok(locked.code === "pin_locked" || locked.guessesRemaining === 0, locked.code);
    assert.equal((await refused(kw.pin.recover({ token: tokens.dave, pin: "2468" }))).status >= 400, true);
  });
});
