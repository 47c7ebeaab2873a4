/**
 * Starts the real Python server for a test file: `agent-training serve` on 127.0.0.1 with a free
 * port (port 0, read back from its first line) and a temporary data folder, one training worker.
 * The virtual environment is the repository's `.venv`, or AGENT_TRAINING_VENV.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { once } from "node:events";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const REPO_ROOT = resolve(fileURLToPath(import.meta.url), "../../../../..");
const VENV = process.env.AGENT_TRAINING_VENV ?? join(REPO_ROOT, ".venv");
const PYTHON_PEER = join(REPO_ROOT, "clients/node/test/python_peer.py");

export interface RunningServer {
  address: string;
  /** The server's data folder (removed by `stop`, kept by `kill`). */
  dataDir: string;
  /** Everything the server printed on stdout so far (its trace export, when turned on). */
  output(): string;
  stop(): Promise<void>;
  /** `kill -9` the server (its workers die with it), keeping its data folder. */
  kill(): Promise<void>;
}

export interface ServerPlace {
  /** host:port to listen on; default a free port. */
  address?: string;
  /** Data folder to use (a server's that was killed); default a new one. */
  dataDir?: string;
}

export async function startServer(env: Record<string, string> = {}, place: ServerPlace = {}): Promise<RunningServer> {
  const dataDir = place.dataDir ?? mkdtempSync(join(tmpdir(), "agent-training-node-"));
  const child: ChildProcess = spawn(
    join(VENV, "bin/agent-training"),
    ["serve", "--address", place.address ?? "127.0.0.1:0", "--data-dir", dataDir, "--workers", "1", "--metrics-address", ""],
    { env: { ...process.env, HF_HUB_OFFLINE: "1", AGENT_TRAINING_LOG_LEVEL: "WARNING", GRPC_VERBOSITY: "ERROR", ...env }, stdio: ["ignore", "pipe", "inherit"] },
  );
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (text: string) => (output += text));
  const address = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start in 60 s: ${output}`)), 60_000);
    child.once("exit", (code) => fail(new Error(`server exited with ${code}: ${output}`)));
    child.stdout?.on("data", () => {
      const match = /serving \S+ on (\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        done(match[1]);
      }
    });
  });
  return {
    address,
    dataDir,
    output: () => output,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await once(child, "exit");
      }
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Run the Python client (test/python_peer.py) against the server and parse its JSON answer. */
export async function python(...args: string[]): Promise<any> {
  const { stdout } = await promisify(execFile)(join(VENV, "bin/python"), [PYTHON_PEER, ...args], {
    env: { ...process.env, HF_HUB_OFFLINE: "1" },
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout);
}

export interface Certificates {
  /** The CA that signed `cert`. */
  ca: string;
  /** Server certificate for 127.0.0.1 and localhost, and its key. */
  cert: string;
  key: string;
}

/** Make a throwaway CA and a server certificate in `folder` (tests/security_support.py); PEM paths. */
export async function certificates(folder: string): Promise<Certificates> {
  const script = [
    "import sys",
    "from pathlib import Path",
    "from tests.security_support import CertificateAuthority",
    "CertificateAuthority(Path(sys.argv[1])).issue('server', server=True)",
  ].join("\n");
  await promisify(execFile)(join(VENV, "bin/python"), ["-c", script, folder], { cwd: REPO_ROOT });
  return { ca: join(folder, "test-ca.pem"), cert: join(folder, "server.pem"), key: join(folder, "server.key") };
}
