/**
 * Where the client connects and how: the one place that reads the client's environment variables,
 * the same ones the CLI and the Python client (`agent_training_client/settings.py`) read.
 *
 * | variable | meaning |
 * | --- | --- |
 * | `AGENT_TRAINING_TARGET` | `host:port` of the service (default `127.0.0.1:50051`) |
 * | `AGENT_TRAINING_TOKEN` | bearer token sent with every call |
 * | `AGENT_TRAINING_TLS` | `1`, `true` or `yes`: TLS, trusting Node's CAs |
 * | `AGENT_TRAINING_CA_CERT` | PEM CA bundle that signed the server's certificate; implies TLS |
 * | `AGENT_TRAINING_CLIENT_CERT` | PEM client certificate for mutual TLS; implies TLS |
 * | `AGENT_TRAINING_CLIENT_KEY` | PEM private key of the client certificate |
 *
 * A variable that is unset or blank counts as not set. Explicit options win over the variables.
 */

export const DEFAULT_TARGET = "127.0.0.1:50051";

/** The names of the variables, as the CLI and the Python client spell them. */
export const ENV = {
  target: "AGENT_TRAINING_TARGET",
  token: "AGENT_TRAINING_TOKEN",
  tls: "AGENT_TRAINING_TLS",
  caCert: "AGENT_TRAINING_CA_CERT",
  clientCert: "AGENT_TRAINING_CLIENT_CERT",
  clientKey: "AGENT_TRAINING_CLIENT_KEY",
} as const;

/** TLS files: paths of PEM files. An empty object is TLS trusting Node's CAs. */
export interface TlsFiles {
  /** CA bundle that signed the server's certificate; default: Node's CAs. */
  caCert?: string;
  /** Client certificate chain, for mutual TLS (with `clientKey`). */
  clientCert?: string;
  /** Private key of `clientCert`. */
  clientKey?: string;
}

/** Connection settings of a client, as the environment describes them. */
export interface ClientSettings {
  /** `host:port` of the service, or a URL (`http://host:port`, `https://host:port`). */
  target: string;
  /** Bearer token sent as `authorization: Bearer <token>`; undefined: none. */
  token?: string;
  /** TLS files, or false for plaintext. */
  tls: TlsFiles | false;
}

const TRUE = ["1", "true", "yes"]; // what the CLI's --tls default accepts

/**
 * Read the AGENT_TRAINING_* client variables; unset or blank ones keep the defaults
 * (plaintext to 127.0.0.1:50051, no token).
 *
 * @param env The variables to read; default `process.env`.
 */
export function settingsFromEnv(env: Record<string, string | undefined> = process.env): ClientSettings {
  const value = (name: string): string | undefined => env[name]?.trim() || undefined;
  const files: TlsFiles = {
    caCert: value(ENV.caCert),
    clientCert: value(ENV.clientCert),
    clientKey: value(ENV.clientKey),
  };
  const tls = TRUE.includes((value(ENV.tls) ?? "").toLowerCase()) || Object.values(files).some(Boolean);
  return { target: value(ENV.target) ?? DEFAULT_TARGET, token: value(ENV.token), tls: tls ? files : false };
}
