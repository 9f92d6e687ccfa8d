// HPKE (RFC 9180, base mode, HKDF-SHA256, AES-256-GCM) with the two KEMs
// the appliance offers: ML-KEM-768+X25519 (X-Wing, post-quantum, the
// appliance key's own) and DHKEM(X25519). Pure-JS KEMs; AES-GCM and
// HKDF come from WebCrypto (crypto.subtle: browsers, Node 20+; React
// Native needs a WebCrypto polyfill such as react-native-quick-crypto).
import { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";
import { buf } from "./bytes.js";

/** The suites, by the names the appliance answers with. */
export const SUITE_X25519 = "DHKEM(X25519)-HKDF-SHA256-AES-256-GCM";
export const SUITE_MLKEM768_X25519 = "MLKEM768-X25519-HKDF-SHA256-AES-256-GCM";
export type SuiteName = typeof SUITE_X25519 | typeof SUITE_MLKEM768_X25519;

/** Which KEM a release is sealed with: "mlkem768-x25519" (default) or "x25519". */
export type RecipientKind = "mlkem768-x25519" | "x25519";

function suiteFor(kind: RecipientKind): CipherSuite {
  return new CipherSuite({
    kem: kind === "x25519" ? new DhkemX25519HkdfSha256() : new XWing(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
}

/** A one-time recipient key pair of the client: the appliance seals a release to it. */
export interface Recipient {
  kind: RecipientKind;
  publicKey: Uint8Array;
  open(enc: Uint8Array, ciphertext: Uint8Array, info: Uint8Array): Promise<Uint8Array>;
}

export async function newRecipient(kind: RecipientKind = "mlkem768-x25519"): Promise<Recipient> {
  const suite = suiteFor(kind);
  const kp = await suite.kem.generateKeyPair();
  const publicKey = new Uint8Array(await suite.kem.serializePublicKey(kp.publicKey));
  return {
    kind,
    publicKey,
    async open(enc, ciphertext, info) {
      const pt = await suite.open({ recipientKey: kp.privateKey, enc: buf(enc), info: buf(info) }, buf(ciphertext));
      return new Uint8Array(pt);
    },
  };
}

/** Seals plaintext to a public key of the given suite (base mode, no aad). */
export async function sealTo(suiteName: string, publicKey: Uint8Array, plaintext: Uint8Array, info: Uint8Array): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  let kind: RecipientKind;
  if (suiteName === SUITE_MLKEM768_X25519) kind = "mlkem768-x25519";
  else if (suiteName === SUITE_X25519) kind = "x25519";
  else throw new TypeError("unknown HPKE suite " + suiteName);
  const suite = suiteFor(kind);
  const pk = await suite.kem.deserializePublicKey(buf(publicKey));
  const out = await suite.seal({ recipientPublicKey: pk, info: buf(info) }, buf(plaintext));
  return { enc: new Uint8Array(out.enc), ciphertext: new Uint8Array(out.ct) };
}
