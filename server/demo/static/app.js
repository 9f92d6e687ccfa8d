// Keywarden passkey demo (dev mode), on Keywarden's TypeScript client
// (keywarden.js is built from clients/typescript by `npm run demo`). The
// client talks to the appliance (registration and authentication, HPKE
// sealing both ways); this file is only the page.
import { browserCreate, browserGet, Keywarden, KeywardenError, toBase64 } from "./keywarden.js";

const kw = new Keywarden({ baseUrl: location.origin });

const $ = (id) => document.getElementById(id);
let storedKey = null; // Uint8Array of the key registered from this page, if any

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

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
  if (err instanceof KeywardenError) {
    code = err.code;
    text = `Keywarden refused (${err.status} ${err.code}): ${err.message}`;
  } else if (err && err.name && err.name !== "Error" && err.name !== "KeywardenClientError") {
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

// The browser's WebAuthn, with the relying-party check first.
async function create(options) {
  checkRP(options.rp && options.rp.id);
  setStatus("busy", "Creating the passkey…");
  return browserCreate(options);
}
async function get(options) {
  checkRP(options.rpId);
  setStatus("busy", "Signing with the passkey…");
  return browserGet(options);
}

// The dev-only session token (a real app gets one from its backend).
async function devSession(userId) {
  const res = await fetch("/demo/session", {
    method: "POST", credentials: "omit",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ userId }),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new KeywardenError({ status: res.status, code: e.code || "http_" + res.status, message: e.message || res.statusText });
  }
  return data.token;
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
    const sessionToken = await devSession(userId);
    const key = crypto.getRandomValues(new Uint8Array(32));
    storedKey = null;
    $("stored-key").textContent = "";
    setStatus("busy", "Registering the passkey with Keywarden…");
    const fin = await kw.passkeys.register({ sessionToken, key, displayName: userId, sealed: $("sealed").checked, create });
    storedKey = key;
    $("stored-key").textContent = toBase64(key);
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
    const out = await kw.passkeys.recover({ userId: userId || undefined, sealed: $("sealed").checked ? "mlkem768-x25519" : false, get });
    $("recovered-key").textContent = toBase64(out.key);
    if (storedKey) {
      const ok = sameBytes(out.key, storedKey);
      $("match").dataset.match = ok ? "yes" : "no";
      $("match").textContent = ok ? "Yes: the recovered key is the stored one." : "NO: the recovered key differs from the stored one!";
    } else {
      $("match").dataset.match = "unknown";
      $("match").textContent = "No key was registered from this page load to compare with.";
    }
    setStatus("recovered", `Key recovered for ${out.userId}.`);
  } catch (err) {
    showError("Recovery", err);
  } finally {
    busy(false);
  }
}

$("register").addEventListener("click", register);
$("recover").addEventListener("click", recover);
if (!window.PublicKeyCredential) {
  showError("Set-up", new Error("this browser has no WebAuthn (PublicKeyCredential); use a current browser on localhost or https"));
  busy(true);
}
