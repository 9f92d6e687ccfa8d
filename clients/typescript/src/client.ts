import { buf, concat, equal, fromBase64, toBase64, utf8 } from "./bytes.js";
import { errorFrom, KeywardenClientError } from "./errors.js";
import { firebaseOwner } from "./owner.js";
import { newRecipient, type RecipientKind, sealTo, SUITE_MLKEM768_X25519 } from "./hpke.js";
import { PinClient } from "./pin.js";
import { RECEIPT_HEADER } from "./receipt.js";
import type { components } from "./types.gen.js";
import { browserCreate, browserGet, type CreateFn, type GetFn } from "./webauthn.js";

type Schemas = components["schemas"];
export type ReleasedKey = Schemas["ReleasedKey"];
export type RegistrationFinishResponse = Schemas["RegistrationFinishResponse"];
export type Evidence = Schemas["Evidence"];
export type ApplianceKeys = Schemas["ApplianceKeys"];

export interface KeywardenOptions {
  /** The public listener, e.g. https://keys.example.com (no trailing slash needed). */
  baseUrl: string;
  /** fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /**
   * The appliance's HPKE key to seal stored keys to. Check it with
   * attestation (GET /v1/attestation) and pin it here; without it the
   * client fetches GET /v1/appliance-key on first use and trusts it.
   */
  applianceKey?: { publicKey: Uint8Array; suite: string };
  /** HKDF label of the PIN unlock tag (keep it fixed for your app). */
  pinLabel?: string;
}

/** How a release comes back: sealed with HPKE to a one-time key of the client (default), or in the clear (over TLS). */
export type Sealing = RecipientKind | false;

interface Req {
  token?: string;
  body?: unknown;
  query?: Record<string, string>;
  headers?: Record<string, string>;
}

const enc = new TextEncoder();
const nul = new Uint8Array([0]);

/** The HPKE info of a key sealed to the appliance key to be stored. */
export function storeInfo(route: string, owner: string, method: string): Uint8Array {
  return concat(utf8("keywarden store v1"), nul, utf8(route), nul, utf8(owner), nul, utf8(method));
}


/**
 * The Keywarden client. Every method throws KeywardenError (status, code,
 * retryAfter, requestId) when the appliance refuses.
 */
export class Keywarden {
  readonly baseUrl: string;
  private readonly f: typeof fetch;
  private applianceKeyCache?: { publicKey: Uint8Array; suite: string };
  readonly firebase: FirebaseKeys;
  readonly passkeys: Passkeys;
  readonly pin: PinClient;

  constructor(o: KeywardenOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, "");
    const f = o.fetch ?? globalThis.fetch;
    if (!f) throw new KeywardenClientError("no fetch: pass options.fetch");
    this.f = f.bind(globalThis);
    this.applianceKeyCache = o.applianceKey;
    this.firebase = new FirebaseKeys(this);
    this.passkeys = new Passkeys(this);
    this.pin = new PinClient((m, p, r) => this.request(m, p, r), (k, route, owner, method) => this.sealForStore(k, route, owner, method), o.pinLabel);
  }

  /** One request; JSON in and out; throws KeywardenError on an error answer. */
  async request<T>(method: string, path: string, r: Req = {}): Promise<{ status: number; data: T; headers: Headers }> {
    let url = this.baseUrl + path;
    if (r.query) url += "?" + new URLSearchParams(r.query).toString();
    const headers: Record<string, string> = { Accept: "application/json", ...r.headers };
    if (r.token !== undefined) headers.Authorization = "Bearer " + r.token;
    let body: string | undefined;
    if (r.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(r.body);
    }
    const resp = await this.f(url, { method, headers, body });
    if (!resp.ok) throw await errorFrom(resp);
    const text = await resp.text();
    return { status: resp.status, data: (text ? JSON.parse(text) : undefined) as T, headers: resp.headers };
  }

  /** The appliance's HPKE public key (GET /v1/appliance-key). */
  async applianceKey(): Promise<{ publicKey: Uint8Array; suite: string }> {
    if (!this.applianceKeyCache) {
      const { data } = await this.request<Schemas["ApplianceKey"]>("GET", "/v1/appliance-key");
      this.applianceKeyCache = { publicKey: fromBase64(data.hpkePublicKey), suite: data.suite };
    }
    return this.applianceKeyCache;
  }

  /**
   * The appliance's public signing keys (GET /v1/appliance-keys): what
   * verifyReceipt checks release receipts with. Its TPM certification by
   * the attestation key is not checked here: pin the document (or its
   * signing key) after checking it with `keywarden receipt verify -ak-name`.
   */
  async applianceKeys(): Promise<ApplianceKeys> {
    return (await this.request<ApplianceKeys>("GET", "/v1/appliance-keys")).data;
  }

  /** TPM evidence over nonce (hex, 16..64 bytes), binding the appliance key; verify it before trusting the key. */
  async attestation(nonceHex: string, bind: "hpke" | "tls" = "hpke"): Promise<Evidence> {
    return (await this.request<Evidence>("GET", "/v1/attestation", { query: { nonce: nonceHex, bind } })).data;
  }

  /** key sealed to the appliance key for (route, owner, method): the store body. */
  async sealForStore(key: Uint8Array, route: string, owner: string, method: string): Promise<Schemas["StoreKey"]> {
    const ak = await this.applianceKey();
    if (ak.suite !== SUITE_MLKEM768_X25519) throw new KeywardenClientError("the appliance key's suite is not " + SUITE_MLKEM768_X25519);
    const s = await sealTo(ak.suite, ak.publicKey, key, storeInfo(route, owner, method));
    return { sealedKey: toBase64(s.ciphertext), enc: toBase64(s.enc), suite: SUITE_MLKEM768_X25519 };
  }

  /** Opens a release: the key in the clear, or sealed to recipient with info. */
  static async open(r: { key?: string; sealedKey?: string; enc?: string }, recipient: Awaited<ReturnType<typeof newRecipient>> | undefined, info: Uint8Array): Promise<Uint8Array> {
    if (recipient) {
      if (!r.sealedKey || !r.enc) throw new KeywardenClientError("the release was not sealed to the recipient key");
      return recipient.open(fromBase64(r.enc), fromBase64(r.sealedKey), info);
    }
    if (!r.key) throw new KeywardenClientError("the release carries no key");
    return fromBase64(r.key);
  }
}

/** Store and release with a Firebase ID token (PUT|GET|DELETE /v1/firebase/key). */
export class FirebaseKeys {
  constructor(private readonly c: Keywarden) {}

  /** Stores key (1..1024 bytes); sealed to the appliance key unless sealed is false. */
  async store(idToken: string, key: Uint8Array, o: { sealed?: boolean } = {}): Promise<{ replaced: boolean }> {
    const body: Schemas["StoreKey"] = o.sealed === false
      ? { key: toBase64(key) }
      : await this.c.sealForStore(key, "/v1/firebase/key", firebaseOwner(idToken), "FIREBASE");
    const { status } = await this.c.request("PUT", "/v1/firebase/key", { token: idToken, body });
    return { replaced: status === 200 };
  }

  /** Releases the key; sealed with HPKE to a one-time client key unless sealed is false. */
  async release(idToken: string, o: { sealed?: Sealing } = {}): Promise<Uint8Array> {
    return (await this.releaseWithReceipt(idToken, o)).key;
  }

  /**
   * release(), with the release's receipt: the raw Keywarden-Receipt
   * header (undefined when the appliance sent none). Check it with
   * verifyReceipt(receipt, applianceKeys, { owner: firebaseOwner(idToken) }).
   */
  async releaseWithReceipt(idToken: string, o: { sealed?: Sealing } = {}): Promise<{ key: Uint8Array; receipt?: string }> {
    const kind = o.sealed === undefined ? "mlkem768-x25519" : o.sealed;
    const recipient = kind ? await newRecipient(kind) : undefined;
    const body: Schemas["ReleaseRequest"] = recipient ? { recipientPublicKey: toBase64(recipient.publicKey) } : {};
    const { data, headers } = await this.c.request<ReleasedKey>("POST", "/v1/firebase/key/release", { token: idToken, body });
    const key = await Keywarden.open(data, recipient, enc.encode("keywarden release v1|firebase|" + firebaseOwner(idToken)));
    return { key, receipt: headers.get(RECEIPT_HEADER) ?? undefined };
  }

  /** Deletes the key (the appliance keeps it as a prior version for the operator). */
  async delete(idToken: string): Promise<void> {
    await this.c.request("DELETE", "/v1/firebase/key", { token: idToken });
  }
}

/** Passkey registration and recovery (/v1/passkeys/…). */
export class Passkeys {
  constructor(private readonly c: Keywarden) {}

  /**
   * Registers a passkey for the user a session token vouches for (minted
   * by your backend with the admin API) and stores key with it (sealed to
   * the appliance key unless sealed is false). A user who has a key adds
   * a passkey only with assertionCeremonyId from a fresh recover(); an
   * imported key waiting to be claimed is claimed (send no key).
   */
  async register(o: { sessionToken: string; key?: Uint8Array; displayName?: string; assertionCeremonyId?: string; sealed?: boolean; create?: CreateFn }): Promise<RegistrationFinishResponse> {
    const begin: Schemas["RegistrationBeginRequest"] = {};
    if (o.displayName) begin.displayName = o.displayName;
    if (o.assertionCeremonyId) begin.assertionCeremonyId = o.assertionCeremonyId;
    const { data: b } = await this.c.request<Schemas["RegistrationBeginResponse"]>("POST", "/v1/passkeys/registration/begin", { token: o.sessionToken, body: begin });
    if (b.keyRequired && !o.key) throw new KeywardenClientError("no key is stored for this user yet: pass key");
    const credential = await (o.create ?? browserCreate)(b.publicKey);
    const finish: Schemas["RegistrationFinishRequest"] = { ceremonyId: b.ceremonyId, credential };
    if (o.key && !b.claimsImportedKey) {
      if (o.sealed === false) {
        finish.key = toBase64(o.key);
      } else {
        const userId = new TextDecoder().decode(fromBase64((b.publicKey.user as { id: string }).id));
        Object.assign(finish, await this.c.sealForStore(o.key, "/v1/passkeys/registration/finish", "user:" + userId, "PASSKEY"));
      }
    }
    return (await this.c.request<RegistrationFinishResponse>("POST", "/v1/passkeys/registration/finish", { body: finish })).data;
  }

  /**
   * Recovers the key with a passkey (userId, or none: a discoverable
   * passkey). The key comes back sealed to a one-time client key bound to
   * the ceremony (the client checks the binding before signing) unless
   * sealed is false.
   */
  async recover(o: { userId?: string; sealed?: Sealing; get?: GetFn } = {}): Promise<{ userId: string; credentialId: string; key: Uint8Array; assertionCeremonyId?: string }> {
    const kind = o.sealed === undefined ? "mlkem768-x25519" : o.sealed;
    const recipient = kind ? await newRecipient(kind) : undefined;
    const begin: Schemas["AuthenticationBeginRequest"] = {};
    if (o.userId !== undefined) begin.userId = o.userId;
    if (recipient) begin.recipientPublicKey = toBase64(recipient.publicKey);
    const { data: b } = await this.c.request<Schemas["AuthenticationBeginResponse"]>("POST", "/v1/passkeys/authentication/begin", { body: begin });
    if (recipient) {
      // The challenge must commit to our key: a TLS-terminating proxy
      // that swapped it would be caught here, before the user signs.
      if (!b.nonce) throw new KeywardenClientError("the appliance did not bind the recipient key");
      const want = new Uint8Array(await crypto.subtle.digest("SHA-256", buf(concat(fromBase64(b.nonce), recipient.publicKey))));
      if (!equal(want, fromBase64(b.publicKey.challenge))) throw new KeywardenClientError("the challenge does not commit to the recipient key");
    }
    const credential = await (o.get ?? browserGet)(b.publicKey);
    const finish: Schemas["AuthenticationFinishRequest"] = { ceremonyId: b.ceremonyId, credential };
    if (recipient) finish.recipientPublicKey = begin.recipientPublicKey;
    const { data } = await this.c.request<Schemas["AuthenticationFinishResponse"]>("POST", "/v1/passkeys/authentication/finish", { body: finish });
    const info = concat(utf8("keywarden passkey release v1"), nul, utf8(b.ceremonyId), nul, utf8(data.userId));
    const key = await Keywarden.open(data, recipient, info);
    return { userId: data.userId, credentialId: data.credentialId, key, assertionCeremonyId: data.assertionCeremonyId };
  }
}


