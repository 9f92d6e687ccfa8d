import { fromBase64 } from "./bytes.js";
import { KeywardenClientError } from "./errors.js";

/** The owner a Firebase ID token names: firebase:<project>/<tenant>/<uid> (tenant empty without one). */
export function firebaseOwner(idToken: string): string {
  const part = idToken.split(".")[1];
  if (!part) throw new KeywardenClientError("not a Firebase ID token");
  const c = JSON.parse(new TextDecoder().decode(fromBase64(part))) as { aud?: string; sub?: string; firebase?: { tenant?: string } };
  if (!c.aud || !c.sub) throw new KeywardenClientError("the Firebase ID token has no aud or sub");
  return `firebase:${c.aud}/${c.firebase?.tenant ?? ""}/${c.sub}`;
}
