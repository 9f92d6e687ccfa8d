// WebAuthn in JSON form: the appliance sends standard creation/request
// options (binary fields base64url) and takes the credential as its
// toJSON() form. Apps on React Native pass their passkey library's
// create/get, which take and give the same JSON; in browsers the default
// uses navigator.credentials.
import { buf, fromBase64, toBase64url } from "./bytes.js";
import { KeywardenClientError } from "./errors.js";
import type { components } from "./types.gen.js";

export type CreationOptionsJSON = components["schemas"]["PublicKeyCredentialCreationOptions"];
export type RequestOptionsJSON = components["schemas"]["PublicKeyCredentialRequestOptions"];
/** A PublicKeyCredential as JSON (registration or authentication response). */
export type CredentialJSON = Record<string, unknown> & { id: string; type: string; response: Record<string, unknown> };

/** Makes a passkey from creation options (e.g. react-native-passkey's create). */
export type CreateFn = (options: CreationOptionsJSON) => Promise<CredentialJSON>;
/** Signs with a passkey from request options (e.g. react-native-passkey's get). */
export type GetFn = (options: RequestOptionsJSON) => Promise<CredentialJSON>;

type Descriptor = { type: string; id: string; transports?: string[] };

function descriptors(list: Descriptor[] | undefined): PublicKeyCredentialDescriptor[] | undefined {
  return list?.map((d) => ({ type: "public-key", id: buf(fromBase64(d.id)), transports: d.transports as AuthenticatorTransport[] | undefined }));
}

function credentials(): CredentialsContainer {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (!nav?.credentials) {
    throw new KeywardenClientError("no navigator.credentials here: pass create/get (e.g. from your React Native passkey library)");
  }
  return nav.credentials;
}

const b64u = (b: ArrayBuffer | null | undefined): string | null => (b ? toBase64url(new Uint8Array(b)) : null);

function toJSON(cred: PublicKeyCredential): CredentialJSON {
  const withJSON = cred as PublicKeyCredential & { toJSON?: () => CredentialJSON };
  if (typeof withJSON.toJSON === "function") return withJSON.toJSON();
  const r = cred.response as AuthenticatorResponse & Record<string, unknown>;
  const response: Record<string, unknown> = { clientDataJSON: b64u(r.clientDataJSON) };
  if ("attestationObject" in r) {
    response.attestationObject = b64u(r.attestationObject as ArrayBuffer);
    const t = (r as unknown as AuthenticatorAttestationResponse).getTransports?.();
    if (t) response.transports = t;
  } else {
    const a = r as unknown as AuthenticatorAssertionResponse;
    response.authenticatorData = b64u(a.authenticatorData);
    response.signature = b64u(a.signature);
    response.userHandle = b64u(a.userHandle);
  }
  return {
    id: cred.id, rawId: b64u(cred.rawId), type: cred.type, response,
    authenticatorAttachment: cred.authenticatorAttachment ?? null,
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

/** navigator.credentials.create with the appliance's options. */
export const browserCreate: CreateFn = async (o) => {
  const user = o.user as { id: string; name?: string; displayName?: string };
  const publicKey: PublicKeyCredentialCreationOptions = {
    ...(o as unknown as PublicKeyCredentialCreationOptions),
    challenge: buf(fromBase64(o.challenge)),
    user: { id: buf(fromBase64(user.id)), name: user.name ?? "", displayName: user.displayName ?? "" },
    excludeCredentials: descriptors(o.excludeCredentials as Descriptor[] | undefined),
  };
  const cred = (await credentials().create({ publicKey })) as PublicKeyCredential | null;
  if (!cred) throw new KeywardenClientError("no passkey was created");
  return toJSON(cred);
};

/** navigator.credentials.get with the appliance's options. */
export const browserGet: GetFn = async (o) => {
  const publicKey: PublicKeyCredentialRequestOptions = {
    ...(o as unknown as PublicKeyCredentialRequestOptions),
    challenge: buf(fromBase64(o.challenge)),
    allowCredentials: descriptors(o.allowCredentials as Descriptor[] | undefined),
  };
  const cred = (await credentials().get({ publicKey })) as PublicKeyCredential | null;
  if (!cred) throw new KeywardenClientError("no passkey was used");
  return toJSON(cred);
};
