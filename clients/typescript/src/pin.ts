// PIN release with a guess limit the appliance enforces (RFC 9497 OPRF,
// mode OPRF, ristretto255-SHA512). The appliance never sees the PIN: the
// client blinds it, the appliance evaluates it with a per-registration
// key, the client finalizes and derives the unlock tag with HKDF-SHA256.
//
// The wire (/v1/pin…) is fixed by the PIN feature; its shapes are written
// here by hand until its routes are in openapi.yaml.
import { Evaluation, Oprf, OPRFClient } from "@cloudflare/voprf-ts";
import { CryptoNoble } from "@cloudflare/voprf-ts/crypto-noble";
import { buf, fromBase64, toBase64, toBase64url, utf8 } from "./bytes.js";
import { KeywardenClientError } from "./errors.js";
import { firebaseOwner } from "./owner.js";
import { newRecipient, type RecipientKind } from "./hpke.js";

const SUITE = Oprf.Suite.RISTRETTO255_SHA512;
/** The default HKDF label of the unlock tag; pass your own (fixed) in KeywardenOptions.pinLabel. */
export const DEFAULT_PIN_LABEL = "keywarden pin unlock tag v1";

export interface PinStatus { registered: boolean; guessLimit?: number; guessesRemaining?: number }

type Request = <T>(method: string, path: string, r: { token?: string; body?: unknown }) => Promise<{ status: number; data: T }>;
type Seal = (key: Uint8Array, route: string, owner: string, method: string) => Promise<Record<string, string | undefined>>;

export class PinClient {
  private readonly label: string;
  constructor(private readonly request: Request, private readonly seal: Seal, label?: string) {
    this.label = label ?? DEFAULT_PIN_LABEL;
  }

  private async blind(pin: string) {
    const client = new OPRFClient(SUITE, CryptoNoble);
    const [fin, req] = await client.blind([utf8(pin)]);
    return { client, fin, blinded: toBase64url(req.blinded[0].serialize()) };
  }

  private async tag(b: Awaited<ReturnType<PinClient["blind"]>>, evaluated: string): Promise<string> {
    const group = Oprf.getGroup(SUITE, CryptoNoble);
    const ev = new Evaluation(Oprf.Mode.OPRF, [group.desElt(fromBase64(evaluated))]);
    const [out] = await b.client.finalize(b.fin, ev);
    const ikm = await crypto.subtle.importKey("raw", buf(out), "HKDF", false, ["deriveBits"]);
    const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: buf(utf8(this.label)) }, ikm, 256);
    return toBase64url(new Uint8Array(bits));
  }

  /**
   * Registers a PIN for the owner token names (a Firebase ID token or a
   * session token). key is sent sealed to the appliance key unless sealed
   * is false; without key the appliance makes 32 bytes and returns them
   * once. guessLimit: 1..255 (default 10).
   */
  async register(o: { token: string; pin: string; guessLimit?: number; key?: Uint8Array; sealed?: boolean }): Promise<{ replaced: boolean; key?: Uint8Array }> {
    const b = await this.blind(o.pin);
    const { data: begin } = await this.request<{ registrationId: string; evaluatedElement: string }>("POST", "/v1/pin/registrations", { token: o.token, body: { blindedElement: b.blinded } });
    const body: Record<string, unknown> = { unlockTag: await this.tag(b, begin.evaluatedElement) };
    if (o.guessLimit !== undefined) body.guessLimit = o.guessLimit;
    if (o.key && o.sealed === false) body.key = toBase64(o.key);
    else if (o.key) Object.assign(body, await this.seal(o.key, "/v1/pin/registrations", tokenOwner(o.token), "PIN"));
    const { status, data } = await this.request<{ key?: string }>("PUT", "/v1/pin/registrations/" + encodeURIComponent(begin.registrationId), { token: o.token, body });
    return { replaced: status === 200, key: data?.key ? fromBase64(data.key) : undefined };
  }

  /**
   * Recovers the key with the PIN. A wrong PIN throws KeywardenError
   * pin_incorrect with guessesRemaining; none left: pin_locked (the key
   * is gone). The key comes back sealed to a one-time client key unless
   * sealed is false.
   */
  async recover(o: { token: string; pin: string; sealed?: RecipientKind | false }): Promise<Uint8Array> {
    const kind = o.sealed === undefined ? "mlkem768-x25519" : o.sealed;
    const recipient = kind ? await newRecipient(kind) : undefined;
    const b = await this.blind(o.pin);
    const start: Record<string, string> = { blindedElement: b.blinded };
    if (recipient) start.recipientPublicKey = toBase64(recipient.publicKey);
    const { data: rec } = await this.request<{ recoveryId: string; evaluatedElement: string; guessesRemaining: number }>("POST", "/v1/pin/recoveries", { token: o.token, body: start });
    const { data } = await this.request<{ key?: string; sealedKey?: string; enc?: string }>("POST", "/v1/pin/recoveries/" + encodeURIComponent(rec.recoveryId) + "/unlock", { token: o.token, body: { unlockTag: await this.tag(b, rec.evaluatedElement) } });
    if (recipient) {
      if (!data.sealedKey || !data.enc) throw new KeywardenClientError("the release was not sealed to the recipient key");
      return recipient.open(fromBase64(data.enc), fromBase64(data.sealedKey), utf8("keywarden release v1|pin|" + tokenOwner(o.token)));
    }
    return fromBase64(data.key ?? "");
  }

  /** Whether a PIN is registered, and how many guesses are left (counts no guess). */
  async status(token: string): Promise<PinStatus> {
    return (await this.request<PinStatus>("GET", "/v1/pin", { token })).data;
  }

  /** Deletes the PIN registration and its key. */
  async delete(token: string): Promise<void> {
    await this.request("DELETE", "/v1/pin", { token });
  }
}

/**
 * The owner a token names: user:<id> for a session token (kws1.<claims>.<mac>),
 * firebase:<project>/<tenant>/<uid> for a Firebase ID token.
 */
export function tokenOwner(token: string): string {
  if (token.startsWith("kws1.")) {
    const c = JSON.parse(new TextDecoder().decode(fromBase64(token.split(".")[1] ?? ""))) as { sub?: string };
    if (!c.sub) throw new KeywardenClientError("the session token names no user");
    return "user:" + c.sub;
  }
  return firebaseOwner(token);
}
