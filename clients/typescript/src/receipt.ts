// Release receipts (the Keywarden-Receipt header of a release), checked
// offline with WebCrypto only: ECDSA P-256 SHA-256 for the batch key's
// certificate and Ed25519 for the batch signature. The checks and byte
// encodings are those of the Go package github.com/keywarden/keywarden/receipt
// (receipt.Verify): change one, change both.

import { buf, concat, equal, fromBase64, utf8 } from "./bytes.js";
import { KeywardenClientError } from "./errors.js";

const CERT_DOMAIN = "keywarden-batch-key-cert-v1\x00";
const BATCH_DOMAIN = "keywarden-receipt-batch-v1\x00";
const LEAF_DOMAIN = "keywarden-receipt-leaf-v1\x00";
const OWNER_DOMAIN = "keywarden-receipt-owner-v1\x00";
/** The receipt format version of the JSON encoding (and of the batch key certificate). */
export const RECEIPT_VERSION = 1;
/** The receipt version of the compact binary encoding (what releases send since it exists); it carries the same signed receipt. */
export const RECEIPT_VERSION_COMPACT = 2;
/** The HTTP response header of a release carrying its receipt. */
export const RECEIPT_HEADER = "Keywarden-Receipt";
/** The longest encoded receipt accepted (as the Go package). */
export const MAX_ENCODED_RECEIPT = 16 << 10;

/** A receipt that does not verify (or is not a receipt). */
export class ReceiptError extends KeywardenClientError {
  constructor(message: string) {
    super("receipt does not verify: " + message);
    this.name = "ReceiptError";
  }
}

/** What a receipt states: the audit line at seq. */
export interface ReceiptStatement {
  node: string; seq: number; line: string; time: string; action: string; outcome: string;
  owner_hash: string; salt: string; method: string; key_version: string; request_id: string;
}
export interface ReceiptBatch { node: string; first: number; last: number; size: number; root: string; time: string }
export interface ReceiptKeyCert { v: number; node: string; alg: string; pub: string; issued: string; signer: string; sig: string }

/** A verified receipt: what the appliance states. */
export interface VerifiedReceipt {
  statement: ReceiptStatement;
  batch: ReceiptBatch;
  cert: ReceiptKeyCert;
  /** The appliance signing key that certified the batch key (hex SHA-256 of its SubjectPublicKeyInfo). */
  signingKeyId: string;
}

/**
 * A trusted appliance signing key: the GET /v1/appliance-keys document
 * (its `signing_key_pem`; its `signing_key_id` must match), or a PEM
 * "PUBLIC KEY" (ECDSA P-256).
 */
export type TrustedApplianceKey = { signing_key_pem: string; signing_key_id?: string } | string;

// ---- encodings (as Go's encoding/json and the receipt package) ----

const hexOf = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** base64url without padding, as Go's RawURLEncoding reads it (URL alphabet only, no padding). */
function b64url(s: string, what: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) throw new ReceiptError(what + " is not base64url");
  return fromBase64(s);
}

/** A JSON string as Go's json.Marshal writes it (HTML-safe escapes, \u2028/\u2029, lone surrogates → U+FFFD). */
function goString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff) {
      out += s[i] + s[i + 1];
      i++;
    } else if (c >= 0xd800 && c <= 0xdfff) out += "\ufffd";
    else if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c === 0x08) out += "\\b";
    else if (c === 0x0c) out += "\\f";
    else if (c < 0x20 || c === 0x3c || c === 0x3e || c === 0x26 || c === 0x2028 || c === 0x2029) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += s[i];
  }
  return out + '"';
}

/** Go's json.Marshal of a struct: fields in order, omitempty strings left out when empty. */
function goJSON(fields: [string, string | number, boolean?][]): string {
  const parts: string[] = [];
  for (const [k, v, omitEmpty] of fields) {
    if (omitEmpty && v === "") continue;
    parts.push(goString(k) + ":" + (typeof v === "number" ? String(v) : goString(v)));
  }
  return "{" + parts.join(",") + "}";
}

function str(o: Record<string, unknown>, k: string, what: string): string {
  const v = o[k];
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw new ReceiptError(`${what}.${k} is not a string`);
  return v;
}

function uint(o: Record<string, unknown>, k: string, what: string): number {
  const v = o[k];
  if (v === undefined || v === null) return 0;
  // Beyond 2^53 a JavaScript number would not be the signed value.
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new ReceiptError(`${what}.${k} is not an integer this client can check`);
  return v;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) throw new ReceiptError(what + " is not an object");
  return v as Record<string, unknown>;
}

/** A parsed receipt: the same fields for both encodings (v names the encoding). */
export interface ParsedReceipt { v: number; stmt: ReceiptStatement; index: number; path: string[]; batch: ReceiptBatch; batch_sig: string; cert: ReceiptKeyCert }

/**
 * Reads a receipt: the Keywarden-Receipt header value (base64url of the
 * version 1 JSON or of the version 2 compact binary encoding) or its JSON
 * (version 1).
 */
export function parseReceipt(s: string): ParsedReceipt {
  if (s.length > MAX_ENCODED_RECEIPT) throw new ReceiptError(`longer than ${MAX_ENCODED_RECEIPT} bytes`);
  let raw: unknown;
  try {
    if (s.startsWith("{")) raw = JSON.parse(s);
    else {
      const bytes = b64url(s, "the receipt");
      if (bytes[0] === RECEIPT_VERSION_COMPACT) return parseCompact(bytes);
      raw = JSON.parse(new TextDecoder().decode(bytes));
    }
  } catch (e) {
    if (e instanceof ReceiptError) throw e;
    throw new ReceiptError("not a receipt: " + (e as Error).message);
  }
  const r = obj(raw, "the receipt");
  const st = obj(r.stmt, "stmt"), b = obj(r.batch, "batch"), c = obj(r.cert, "cert");
  const path = r.path ?? [];
  if (!Array.isArray(path) || path.some((p) => typeof p !== "string")) throw new ReceiptError("path is not a list of strings");
  if (r.index !== undefined && (typeof r.index !== "number" || !Number.isSafeInteger(r.index))) throw new ReceiptError("index is not an integer");
  if (uint(r, "v", "receipt") !== RECEIPT_VERSION) throw new ReceiptError("unknown receipt version");
  return {
    v: uint(r, "v", "receipt"),
    stmt: {
      node: str(st, "node", "stmt"), seq: uint(st, "seq", "stmt"), line: str(st, "line", "stmt"), time: str(st, "time", "stmt"),
      action: str(st, "action", "stmt"), outcome: str(st, "outcome", "stmt"), owner_hash: str(st, "owner_hash", "stmt"),
      salt: str(st, "salt", "stmt"), method: str(st, "method", "stmt"), key_version: str(st, "key_version", "stmt"),
      request_id: str(st, "request_id", "stmt"),
    },
    index: (r.index as number | undefined) ?? 0,
    path: path as string[],
    batch: { node: str(b, "node", "batch"), first: uint(b, "first", "batch"), last: uint(b, "last", "batch"), size: uint(b, "size", "batch"), root: str(b, "root", "batch"), time: str(b, "time", "batch") },
    batch_sig: str(r, "batch_sig", "receipt"),
    cert: { v: uint(c, "v", "cert"), node: str(c, "node", "cert"), alg: str(c, "alg", "cert"), pub: str(c, "pub", "cert"), issued: str(c, "issued", "cert"), signer: str(c, "signer", "cert"), sig: str(c, "sig", "cert") },
  };
}

/**
 * The compact encoding (version 2; Go's receipt/compact.go): the same
 * statement, path, batch, signature and certificate in binary, the node
 * name once. Integers big-endian; str = 2-byte length and UTF-8; bytes =
 * 1-byte length.
 *
 *   u8 2 · batch: u64 first, u64 last, u32 size, [32] root, str time · [64] batch signature ·
 *   cert: str issued, [32] batch key, [32] signer, bytes sig · u8 n, n zero bytes ·
 *   statement: str node, u64 seq, [32] line, str time, str action, str outcome, [32] owner hash,
 *   bytes salt, str method, str key version, str request id · u32 index, u8 n, n × [32] path
 */
function parseCompact(b: Uint8Array): ParsedReceipt {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const text = new TextDecoder("utf-8", { fatal: true });
  let o = 0;
  const take = (n: number): Uint8Array => {
    if (o + n > b.length) throw new ReceiptError("not a receipt: truncated");
    const v = b.subarray(o, o + n);
    o += n;
    return v;
  };
  const u8 = () => take(1)[0];
  const u32 = () => { take(4); return dv.getUint32(o - 4); };
  const u64 = () => {
    take(8);
    const v = dv.getBigUint64(o - 8);
    // Beyond 2^53 a JavaScript number would not be the signed value.
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ReceiptError("a number is not an integer this client can check");
    return Number(v);
  };
  const str = () => {
    take(2);
    const n = dv.getUint16(o - 2);
    try {
      return text.decode(take(n));
    } catch (e) {
      if (e instanceof ReceiptError) throw e;
      throw new ReceiptError("not a receipt: a string is not UTF-8");
    }
  };
  const hex = (n: number) => hexOf(take(n));
  const b64 = (n: number) => toB64url(take(n));

  if (u8() !== RECEIPT_VERSION_COMPACT) throw new ReceiptError("unknown receipt version");
  const first = u64(), last = u64(), size = u32(), root = hex(32), btime = str();
  const batchSig = b64(64);
  const issued = str(), pub = b64(32), signer = hex(32), certSig = b64(u8());
  const pad = take(u8());
  if (pad.length > 2 || pad.some((x) => x !== 0)) throw new ReceiptError("not a receipt: padding");
  const node = str(), seq = u64(), line = hex(32), time = str(), action = str(), outcome = str();
  const ownerHash = b64(32), salt = b64(u8());
  const method = str(), keyVersion = str(), requestId = str();
  const index = u32();
  const path: string[] = [];
  for (let n = u8(); n > 0; n--) path.push(hex(32));
  if (o !== b.length) throw new ReceiptError(`not a receipt: ${b.length - o} bytes after its end`);
  return {
    v: RECEIPT_VERSION_COMPACT,
    stmt: { node, seq, line, time, action, outcome, owner_hash: ownerHash, salt, method, key_version: keyVersion, request_id: requestId },
    index,
    path,
    batch: { node, first, last, size, root, time: btime },
    batch_sig: batchSig,
    cert: { v: RECEIPT_VERSION, node, alg: "ed25519", pub, issued, signer, sig: certSig },
  };
}

/** RFC 3339 time (as Go's time.RFC3339Nano parses what the appliance writes) → nanoseconds since the epoch. */
export function parseRFC3339(s: string): bigint | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|([+-])(\d{2}):(\d{2}))$/.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number);
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const dim = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  if (mo < 1 || mo > 12 || d < 1 || d > dim[mo - 1] || h > 23 || mi > 59 || se > 59) return undefined;
  let off = 0;
  if (m[8] !== "Z") {
    const oh = Number(m[10]), om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    off = (m[9] === "-" ? -1 : 1) * (oh * 3600 + om * 60);
  }
  const days = Date.UTC(y, mo - 1, d) / 86400000;
  const secs = BigInt(days) * 86400n + BigInt(h * 3600 + mi * 60 + se - off);
  return secs * 1000000000n + BigInt((m[7] ?? "").padEnd(9, "0") || "0");
}

// ---- hashes (RFC 6962 Merkle tree, the statement's leaf, the owner hash) ----

async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf(concat(...parts))));
}

/** The statement's Merkle leaf hash: 0x00 ‖ leaf domain ‖ seq (8 bytes BE) ‖ each string field with a 4-byte BE length. */
async function leafHash(s: ReceiptStatement): Promise<Uint8Array> {
  const seq = new Uint8Array(8);
  new DataView(seq.buffer).setBigUint64(0, BigInt(s.seq));
  const parts: Uint8Array[] = [new Uint8Array([0]), utf8(LEAF_DOMAIN), seq];
  for (const f of [s.node, s.line, s.time, s.action, s.outcome, s.owner_hash, s.salt, s.method, s.key_version, s.request_id]) {
    const b = utf8(f), n = new Uint8Array(4);
    new DataView(n.buffer).setUint32(0, b.length);
    parts.push(n, b);
  }
  return sha256(...parts);
}

const node = (l: Uint8Array, r: Uint8Array) => sha256(new Uint8Array([1]), l, r);

/** The root of a tree of n leaves from leaf i and its path (RFC 9162, 2.1.3.2). */
async function rootFromPath(leaf: Uint8Array, i: number, n: number, path: Uint8Array[]): Promise<Uint8Array | undefined> {
  if (i < 0 || n < 1 || i >= n) return undefined;
  let fn = BigInt(i), sn = BigInt(n - 1), r = leaf;
  for (const p of path) {
    if (sn === 0n) return undefined;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await node(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await node(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : undefined;
}

/** SHA-256(owner domain ‖ salt ‖ owner), base64url: the receipt's owner hash for owner. */
async function ownerHash(owner: string, salt: Uint8Array): Promise<string> {
  const h = await sha256(utf8(OWNER_DOMAIN), salt, utf8(owner));
  return toB64url(h);
}

function toB64url(b: Uint8Array): string {
  const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  let out = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    out += a[(n >> 18) & 63] + a[(n >> 12) & 63] + (i + 1 < b.length ? a[(n >> 6) & 63] : "") + (i + 2 < b.length ? a[n & 63] : "");
  }
  return out;
}

// ---- signatures ----

/** An ASN.1 DER ECDSA signature (SEQUENCE of two INTEGERs) → r ‖ s, 32 bytes each, as WebCrypto takes it. */
function derToRaw(der: Uint8Array): Uint8Array | undefined {
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2 || der[1] >= 0x80) return undefined;
  const out = new Uint8Array(64);
  let o = 2;
  for (let k = 0; k < 2; k++) {
    if (der[o] !== 0x02) return undefined;
    const n = der[o + 1];
    if (n === 0 || n >= 0x80 || o + 2 + n > der.length) return undefined;
    let v = der.subarray(o + 2, o + 2 + n);
    if (v[0] & 0x80) return undefined; // negative
    if (v[0] === 0 && (n === 1 || !(v[1] & 0x80))) return undefined; // zero, or not minimal
    if (v[0] === 0) v = v.subarray(1);
    if (v.length > 32) return undefined;
    out.set(v, k * 32 + 32 - v.length);
    o += 2 + n;
  }
  return o === der.length ? out : undefined;
}

function pemToDer(pem: string): Uint8Array {
  const m = /-----BEGIN PUBLIC KEY-----([\s\S]*?)-----END PUBLIC KEY-----/.exec(pem);
  if (!m) throw new KeywardenClientError("the appliance key is not a PEM PUBLIC KEY");
  return fromBase64(m[1].replace(/\s+/g, ""));
}

interface Trusted { key: CryptoKey; id: string }

async function importTrusted(k: TrustedApplianceKey): Promise<Trusted> {
  const pem = typeof k === "string" ? k : k.signing_key_pem;
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("spki", buf(pemToDer(pem)), { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]);
  } catch (e) {
    if (e instanceof KeywardenClientError) throw e;
    throw new KeywardenClientError("the appliance key is not an ECDSA P-256 public key");
  }
  // The key id is over the key's own SubjectPublicKeyInfo (uncompressed point), as Go's receipt.KeyID.
  const id = hexOf(await sha256(new Uint8Array(await crypto.subtle.exportKey("spki", key))));
  if (typeof k !== "string" && k.signing_key_id !== undefined && k.signing_key_id !== id) {
    throw new KeywardenClientError("the appliance keys document's signing_key_id is not its key's");
  }
  return { key, id };
}

/**
 * Checks a release receipt (the Keywarden-Receipt header value) with the
 * trusted appliance signing keys, as Go's receipt.Verify: the batch key's
 * certificate (signed by one of the keys), the batch signature, the node
 * names, the statement's seq inside the batch, the Merkle path to the
 * signed root; and that the statement is not older than the batch key (a
 * batch key signs only what happened after it was made). With owner (the
 * owner id as the audit log names it, e.g. firebaseOwner(idToken)), the
 * statement must be about that owner. Throws ReceiptError otherwise.
 *
 * applianceKeys is what you trust: the GET /v1/appliance-keys document, or
 * its signing key as PEM. This client does not check the document's TPM
 * certification by the attestation key (`keywarden receipt verify -ak-name`
 * or Go's attestapi.VerifyApplianceKeys do): fetch it over a channel you
 * trust, or pin the key.
 */
export async function verifyReceipt(receiptHeader: string | null | undefined, applianceKeys: TrustedApplianceKey | TrustedApplianceKey[], o: { owner?: string } = {}): Promise<VerifiedReceipt> {
  if (typeof receiptHeader !== "string" || receiptHeader.trim() === "") throw new ReceiptError("no receipt (the answer had no " + RECEIPT_HEADER + " header)");
  const r = parseReceipt(receiptHeader.trim());
  if (r.v !== RECEIPT_VERSION && r.v !== RECEIPT_VERSION_COMPACT) throw new ReceiptError("unknown receipt version");

  // The batch key's certificate.
  const c = r.cert;
  if (c.v !== RECEIPT_VERSION || c.alg !== "ed25519") throw new ReceiptError(`batch key certificate version ${c.v}, algorithm ${JSON.stringify(c.alg)}`);
  const pub = b64url(c.pub, "the batch key");
  if (pub.length !== 32) throw new ReceiptError("batch key is not an Ed25519 public key");
  const issued = parseRFC3339(c.issued);
  if (issued === undefined) throw new ReceiptError("batch key certificate time");
  const der = b64url(c.sig, "the batch key certificate signature");
  const certMsg = utf8(CERT_DOMAIN + goJSON([["v", c.v], ["node", c.node, true], ["alg", c.alg], ["pub", c.pub], ["issued", c.issued], ["signer", c.signer]]));
  const raw = derToRaw(der);
  let signer: Trusted | undefined;
  for (const k of Array.isArray(applianceKeys) ? applianceKeys : [applianceKeys]) {
    const t = await importTrusted(k);
    if (raw && t.id === c.signer && await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, t.key, buf(raw), buf(certMsg))) {
      signer = t;
      break;
    }
  }
  if (!signer) throw new ReceiptError("batch key not certified by a trusted appliance key");

  // The batch signature.
  const b = r.batch;
  const batchMsg = utf8(BATCH_DOMAIN + goJSON([["node", b.node, true], ["first", b.first], ["last", b.last], ["size", b.size], ["root", b.root], ["time", b.time]]));
  const sig = b64url(r.batch_sig, "the batch signature");
  let ok = false;
  if (sig.length === 64) {
    const bk = await crypto.subtle.importKey("raw", buf(pub), { name: "Ed25519" }, false, ["verify"]);
    ok = await crypto.subtle.verify({ name: "Ed25519" }, bk, buf(sig), buf(batchMsg));
  }
  if (!ok) throw new ReceiptError("the batch signature does not verify");

  const s = r.stmt;
  if (s.node !== b.node || c.node !== b.node) throw new ReceiptError("node names differ");
  if (s.seq < b.first || s.seq > b.last) throw new ReceiptError(`seq ${s.seq} outside the batch ${b.first}–${b.last}`);
  const path = r.path.map((p, i) => {
    if (!/^[0-9a-fA-F]{64}$/.test(p)) throw new ReceiptError(`path element ${i}`);
    return Uint8Array.from(p.match(/../g)!, (x) => parseInt(x, 16));
  });
  const root = await rootFromPath(await leafHash(s), r.index, b.size, path);
  if (!root || hexOf(root) !== b.root) throw new ReceiptError("Merkle path does not lead to the signed root");

  const t = parseRFC3339(s.time);
  if (t === undefined) throw new ReceiptError("statement time");
  if (t < issued) throw new ReceiptError("the statement is older than its batch key");

  if (o.owner !== undefined) {
    let salt: Uint8Array | undefined;
    try {
      salt = b64url(s.salt, "the salt");
    } catch {
      salt = undefined;
    }
    if (!salt || !equal(utf8(await ownerHash(o.owner, salt)), utf8(s.owner_hash))) throw new ReceiptError("the receipt is not about this owner");
  }
  return { statement: s, batch: b, cert: c, signingKeyId: signer.id };
}
