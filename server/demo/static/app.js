// Keywarden passkey demo (dev mode). Plain JavaScript, no libraries, no
// build step. Read it top to bottom: helpers, then the two flows.
"use strict";

// ---- base64 and base64url <-> bytes ----------------------------------------
// WebAuthn wants ArrayBuffers; the API speaks JSON with base64url fields
// (and base64 for the key). Decoding accepts either alphabet, padded or not.

function bytesToBase64(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function bytesToBase64url(bytes) {
  return bytesToBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function base64ToBytes(s) {
  const std = s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const bin = atob(std + "===".slice((std.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const toBuffer = (s) => base64ToBytes(s).buffer;
const fromBuffer = (buf) => bytesToBase64url(new Uint8Array(buf));

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// ---- WebAuthn JSON <-> browser objects -------------------------------------

function creationOptionsFromJSON(o) {
  const pk = { ...o, challenge: toBuffer(o.challenge), user: { ...o.user, id: toBuffer(o.user.id) } };
  if (o.excludeCredentials) {
    pk.excludeCredentials = o.excludeCredentials.map((c) => ({ ...c, id: toBuffer(c.id) }));
  }
  return pk;
}

function requestOptionsFromJSON(o) {
  const pk = { ...o, challenge: toBuffer(o.challenge) };
  if (o.allowCredentials) {
    pk.allowCredentials = o.allowCredentials.map((c) => ({ ...c, id: toBuffer(c.id) }));
  }
  return pk;
}

function registrationToJSON(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: fromBuffer(cred.rawId),
    type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment || undefined,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: {
      clientDataJSON: fromBuffer(r.clientDataJSON),
      attestationObject: fromBuffer(r.attestationObject),
      transports: typeof r.getTransports === "function" ? r.getTransports() : [],
    },
  };
}

function assertionToJSON(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: fromBuffer(cred.rawId),
    type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment || undefined,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: {
      clientDataJSON: fromBuffer(r.clientDataJSON),
      authenticatorData: fromBuffer(r.authenticatorData),
      signature: fromBuffer(r.signature),
      userHandle: r.userHandle ? fromBuffer(r.userHandle) : null,
    },
  };
}

// ---- HTTP ------------------------------------------------------------------

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// post sends JSON and returns the decoded answer; a non-2xx answer throws
// APIError with Keywarden's {"error":{"code","message"}}.
async function post(path, body, token) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), credentials: "omit" });
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new APIError(res.status, err.code || "http_" + res.status, err.message || res.statusText);
  }
  return data;
}

// ---- page state ------------------------------------------------------------

const $ = (id) => document.getElementById(id);
let storedKey = null; // Uint8Array of the key registered from this page, if any

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
  if (state !== "error") {
    $("error").hidden = true;
    $("error").textContent = "";
    $("error").dataset.code = "";
  }
}

function showError(step, err) {
  let code = "client_error";
  let text = String((err && err.message) || err);
  if (err instanceof APIError) {
    code = err.code;
    text = `Keywarden refused (${err.status} ${err.code}): ${err.message}`;
  } else if (err && err.name) {
    code = "browser_" + err.name;
    text = `The browser refused (${err.name}): ${err.message}`;
  }
  setStatus("error", step + " failed.");
  $("error").hidden = false;
  $("error").dataset.code = code;
  $("error").textContent = text;
}

// busy disables the buttons while a flow runs; when it ends, #status's
// data-done counts the flows finished (tests wait on it).
function busy(on) {
  $("register").disabled = on;
  $("recover").disabled = on;
  if (!on) $("status").dataset.done = String(Number($("status").dataset.done || "0") + 1);
}

// checkRP explains the most common dev mistake: opening the page at an
// origin whose host is not the relying party (e.g. 127.0.0.1 vs localhost).
function checkRP(rpId) {
  const host = location.hostname;
  if (rpId && host !== rpId && !host.endsWith("." + rpId)) {
    throw new Error(`open this page at a host of the relying party "${rpId}" (this page is at "${host}")`);
  }
}

// ---- register: session token → key → passkey → store ------------------------

async function register() {
  const userId = $("user-id").value.trim();
  if (!userId) {
    showError("Registration", new Error("type a user id first"));
    return;
  }
  busy(true);
  $("recovered-key").textContent = "";
  $("match").textContent = "";
  $("match").dataset.match = "";
  try {
    setStatus("busy", "Getting a dev session token…");
    const session = await post("/demo/session", { userId });

    const key = crypto.getRandomValues(new Uint8Array(32));
    storedKey = null;
    $("stored-key").textContent = "";

    setStatus("busy", "Asking Keywarden for creation options…");
    const begin = await post("/v1/passkeys/registration/begin", { displayName: userId }, session.token);
    checkRP(begin.publicKey.rp && begin.publicKey.rp.id);

    setStatus("busy", "Creating the passkey…");
    const cred = await navigator.credentials.create({ publicKey: creationOptionsFromJSON(begin.publicKey) });
    if (!cred) throw new Error("the browser returned no credential");

    setStatus("busy", "Storing the key with the passkey…");
    const fin = await post("/v1/passkeys/registration/finish", {
      ceremonyId: begin.ceremonyId,
      credential: registrationToJSON(cred),
      key: bytesToBase64(key),
    });
    storedKey = key;
    $("stored-key").textContent = bytesToBase64(key);
    setStatus("registered", `Passkey registered for ${fin.userId}; key stored${fin.keyReplaced ? " (replacing the previous one)" : ""}.`);
  } catch (err) {
    showError("Registration", err);
  } finally {
    busy(false);
  }
}

// ---- recover: assertion → key ------------------------------------------------

async function recover() {
  const userId = $("user-id").value.trim();
  busy(true);
  $("recovered-key").textContent = "";
  $("match").textContent = "";
  $("match").dataset.match = "";
  try {
    setStatus("busy", "Asking Keywarden for a challenge…");
    const begin = await post("/v1/passkeys/authentication/begin", userId ? { userId } : {});
    checkRP(begin.publicKey.rpId);

    setStatus("busy", "Signing with the passkey…");
    const cred = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(begin.publicKey) });
    if (!cred) throw new Error("the browser returned no credential");

    setStatus("busy", "Proving the passkey to Keywarden…");
    const fin = await post("/v1/passkeys/authentication/finish", {
      ceremonyId: begin.ceremonyId,
      credential: assertionToJSON(cred),
    });
    if (!fin.key) throw new Error("Keywarden answered without a key");
    const got = base64ToBytes(fin.key);
    $("recovered-key").textContent = bytesToBase64(got);
    if (storedKey) {
      const ok = sameBytes(got, storedKey);
      $("match").dataset.match = ok ? "yes" : "no";
      $("match").textContent = ok ? "Yes: the recovered key is the stored one." : "NO: the recovered key differs from the stored one!";
    } else {
      $("match").dataset.match = "unknown";
      $("match").textContent = "No key was registered from this page load to compare with.";
    }
    setStatus("recovered", `Key recovered for ${fin.userId}.`);
  } catch (err) {
    showError("Recovery", err);
  } finally {
    busy(false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("register").addEventListener("click", register);
  $("recover").addEventListener("click", recover);
  if (!window.PublicKeyCredential) {
    showError("Set-up", new Error("this browser has no WebAuthn (PublicKeyCredential); use a current browser on localhost or https"));
    busy(true);
  }
});
