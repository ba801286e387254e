// Typed control-plane errors. Each has a stable `code`, a one-line message that says what failed
// and what to do, and `retryable`: whether trying the same thing again later can succeed.
import { TransportError } from './ts2021.ts';
import { HandshakeRefusedError } from './noise/handshake.ts';

/** Stable error codes of the control client. */
export const ControlErrorCode = {
  authKeyInvalid: 'auth_key_invalid',
  authKeyExpired: 'auth_key_expired',
  authKeyUsed: 'auth_key_used',
  authKeyRequired: 'auth_key_required',
  registrationRejected: 'registration_rejected',
  nodeKeyExpired: 'node_key_expired',
  nodeNotFound: 'node_not_found',
  serverUnreachable: 'server_unreachable',
  serverKeyMismatch: 'server_key_mismatch',
  tlsUntrusted: 'tls_untrusted',
  tlsExpired: 'tls_expired',
  tlsWrongHost: 'tls_wrong_host',
  handshakeFailed: 'handshake_failed',
  versionRejected: 'version_rejected',
  serverError: 'server_error',
  protocolError: 'protocol_error',
  closed: 'closed',
} as const;
/** One of {@link ControlErrorCode}. */
export type ControlErrorCode = (typeof ControlErrorCode)[keyof typeof ControlErrorCode];

/** A control-plane failure with a stable code. */
export class ControlError extends Error {
  /** Stable machine-readable code. */
  readonly code: ControlErrorCode;
  /** True when retrying later may succeed without the user changing anything. */
  readonly retryable: boolean;
  /** Text the server sent, when there was any. */
  readonly serverMessage: string | undefined;

  constructor(code: ControlErrorCode, message: string, opts: { retryable: boolean; serverMessage?: string; cause?: unknown }) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ControlError';
    this.code = code;
    this.retryable = opts.retryable;
    this.serverMessage = opts.serverMessage;
  }
}

/**
 * Maps a RegisterResponse.Error from headscale (HS:hscontrol/auth.go, types/preauth_key.go,
 * db/preauth_keys.go) to a ControlError.
 */
export function registerError(serverMessage: string): ControlError {
  const m = serverMessage.toLowerCase();
  const q = JSON.stringify(serverMessage);
  if (/invalid pre ?auth ?key|invalid authkey|failed to parse auth-key|auth-key not found/.test(m)) {
    return new ControlError(ControlErrorCode.authKeyInvalid,
      `control server rejected the auth key (${q}): check it, or create a new one (headscale preauthkeys create); retrying will not help`,
      { retryable: false, serverMessage });
  }
  if (/expired/.test(m) && /auth-?key/.test(m)) {
    return new ControlError(ControlErrorCode.authKeyExpired,
      `the auth key has expired (${q}): create a new one; retrying will not help`, { retryable: false, serverMessage });
  }
  if (/already (been )?used/.test(m)) {
    return new ControlError(ControlErrorCode.authKeyUsed,
      `the single-use auth key was already used (${q}): create a new or a reusable one; retrying will not help`,
      { retryable: false, serverMessage });
  }
  return new ControlError(ControlErrorCode.registrationRejected,
    `control server refused the registration (${q}); retrying will not help until that is fixed`,
    { retryable: false, serverMessage });
}

/** Converts anything thrown below into a ControlError. */
export function toControlError(e: unknown, serverUrl: string): ControlError {
  if (e instanceof ControlError) return e;
  if (e instanceof TransportError) {
    if (e.unreachable) {
      return new ControlError(ControlErrorCode.serverUnreachable,
        `cannot reach control server ${serverUrl} (${causeText(e)}): check the URL and that the server is running; retrying may help`,
        { retryable: true, cause: e });
    }
    if (e.tlsUntrusted) {
      const c = e.cause as (NodeJS.ErrnoException & { reason?: string }) | undefined;
      if (c?.code === 'CERT_HAS_EXPIRED') {
        return new ControlError(ControlErrorCode.tlsExpired,
          `control server ${serverUrl} presents an expired TLS certificate: renew the certificate on the server; retrying will not help`,
          { retryable: false, cause: e });
      }
      if (c?.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
        return new ControlError(ControlErrorCode.tlsWrongHost,
          `control server ${serverUrl} presents a TLS certificate for another name (${c.reason ?? c.message}): use a name the certificate covers in the login-server URL, or fix the certificate; retrying will not help`,
          { retryable: false, cause: e });
      }
      return new ControlError(ControlErrorCode.tlsUntrusted,
        `control server ${serverUrl} presents a TLS certificate this machine does not trust (${causeText(e)}): give its CA with the CA-file option or fix the certificate; retrying will not help`,
        { retryable: false, cause: e });
    }
    if (e.stage === 'handshake') {
      const refused = e.cause instanceof HandshakeRefusedError ? e.cause.serverMessage : undefined;
      return new ControlError(ControlErrorCode.handshakeFailed,
        `Noise handshake with ${serverUrl} failed (${e.message}); retrying may help, the server key is fetched again`,
        { retryable: true, cause: e, ...(refused === undefined ? {} : { serverMessage: refused }) });
    }
    return new ControlError(ControlErrorCode.serverError,
      `control server ${serverUrl}: ${e.message}; retrying may help`, { retryable: true, cause: e });
  }
  const err = e as Error;
  return new ControlError(ControlErrorCode.protocolError,
    `talking to control server ${serverUrl} failed: ${err?.message ?? String(e)}; retrying may help`, { retryable: true, cause: e });
}

function causeText(e: Error): string {
  const c = e.cause as NodeJS.ErrnoException | undefined;
  return c?.code ?? c?.message ?? e.message;
}
