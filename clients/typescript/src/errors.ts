import type { components } from "./types.gen.js";

/** Every error code the appliance answers with (openapi.yaml, ErrorCode). */
export type ErrorCode = components["schemas"]["ErrorCode"];

/**
 * An error answer of the appliance: `{"error":{"code","message"}}` with its
 * HTTP status. `retryAfter` is the Retry-After header in seconds (429 and
 * most 503s), `requestId` the X-Request-Id that the appliance's logs and
 * audit lines carry. `guessesRemaining` is set on PIN refusals.
 */
export class KeywardenError extends Error {
  readonly status: number;
  readonly code: ErrorCode | string;
  readonly retryAfter?: number;
  readonly requestId?: string;
  readonly guessesRemaining?: number;

  constructor(init: { status: number; code: string; message: string; retryAfter?: number; requestId?: string; guessesRemaining?: number }) {
    super(init.message);
    this.name = "KeywardenError";
    this.status = init.status;
    this.code = init.code;
    this.retryAfter = init.retryAfter;
    this.requestId = init.requestId;
    this.guessesRemaining = init.guessesRemaining;
  }

  /** Whether retrying later may succeed (429, 503 and 502 answers). */
  get retryable(): boolean {
    return this.status === 429 || this.status === 503 || this.status === 502;
  }
}

/** The client refused something before or after talking to the appliance. */
export class KeywardenClientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeywardenClientError";
  }
}

export async function errorFrom(resp: Response): Promise<KeywardenError> {
  let code = "http_" + resp.status, message = resp.statusText || "request failed";
  let guessesRemaining: number | undefined;
  try {
    const body = (await resp.json()) as { error?: { code?: string; message?: string }; guessesRemaining?: number };
    if (body?.error?.code) code = body.error.code;
    if (body?.error?.message) message = body.error.message;
    if (typeof body?.guessesRemaining === "number") guessesRemaining = body.guessesRemaining;
  } catch {
    // not JSON: keep the status
  }
  const ra = resp.headers.get("Retry-After");
  const secs = ra !== null && /^\d+$/.test(ra) ? Number(ra) : undefined;
  return new KeywardenError({
    status: resp.status, code, message, retryAfter: secs,
    requestId: resp.headers.get("X-Request-Id") ?? undefined, guessesRemaining,
  });
}
