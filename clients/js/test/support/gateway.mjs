// The real local gateway, started for a test file: the `wsbridge-local` binary on free
// loopback ports (it prints where), stopped by its PID at the end.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPOSITORY = fileURLToPath(new URL('../../../../', import.meta.url));

/** The binary: WSBRIDGE_LOCAL_BIN, else the workspace's debug build. */
export const BINARY = process.env.WSBRIDGE_LOCAL_BIN ?? `${REPOSITORY}target/debug/wsbridge-local`;

/** The test channel configuration. */
export const TEST_CHANNELS = fileURLToPath(new URL('../channels.json', import.meta.url));

/** Patience for anything that should happen soon: a bound so a failure fails instead of
 * hanging, never a measure of speed. */
export const PATIENCE_MS = 15_000;

/**
 * Starts the gateway. `channels`: a channel configuration file (null: the gateway's
 * default, the chat example); `args`: more flags; `env`: more environment variables.
 */
export async function startGateway({ channels = TEST_CHANNELS, args = [], env: extra = {} } = {}) {
  if (!existsSync(BINARY)) {
    throw new Error(`${BINARY} is missing: build it with \`cargo build -p wsbridge-local\` (scripts/test-js.sh does)`);
  }
  const env = { ...process.env, NO_COLOR: '1' };
  // The dev secret and an open broadcast API: what the tests sign and call with.
  for (const name of ['JWT_SECRET', 'JWT_PUBLIC_KEY', 'JWT_JWKS_URL', 'JWT_JWKS', 'BROADCAST_API_KEY', 'CHANNELS_CONFIG', 'WSBRIDGE_CHANNELS_FILE']) {
    delete env[name];
  }
  Object.assign(env, extra);
  const flags = ['--ws-port', '0', '--http-port', '0', ...(channels ? ['--channels', channels] : []), ...args];
  const child = spawn(BINARY, flags, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  const remember = (line) => {
    log.push(line);
    if (log.length > 200) log.shift();
  };
  createInterface({ input: child.stderr }).on('line', remember);
  const lines = createInterface({ input: child.stdout });
  const banner = await new Promise((resolve, reject) => {
    const seen = [];
    const timer = setTimeout(() => reject(new Error(`no banner within ${PATIENCE_MS} ms:\n${seen.join('\n')}`)), PATIENCE_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`wsbridge-local exited with ${code}:\n${[...seen, ...log].join('\n')}`));
    });
    lines.on('line', (line) => {
      seen.push(line);
      if (line.startsWith('Logs:')) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
  // Keep reading: a full pipe would stall the gateway's logging, and with it the gateway.
  lines.removeAllListeners('line');
  lines.on('line', remember);
  child.removeAllListeners('exit');

  const field = (label) => {
    const line = banner.find((l) => l.trimStart().startsWith(label));
    if (!line) throw new Error(`no ${label} in the banner:\n${banner.join('\n')}`);
    return line.trim().split(/\s+/).find((word) => /^(ws|http):\/\//.test(word));
  };
  const wsUrl = field('WebSocket API');
  const httpUrl = field('broadcast API').replace(/\/broadcast$/, '');
  const managementUrl = wsUrl.replace(/^ws:/, 'http:');

  return {
    wsUrl,
    env,
    httpUrl,
    managementUrl,
    banner,
    log,
    pid: child.pid,

    /** A dev token for `user`, from the gateway's demo sign-in. */
    async token(user) {
      const response = await fetch(`${httpUrl}/demo/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user }),
      });
      if (!response.ok) throw new Error(`POST /demo/token: ${response.status} ${await response.text()}`);
      return (await response.json()).token;
    },

    /** `POST /broadcast`; resolves with the report once the broadcast is done. A 202
     * (`status: 'running'`: the rest, or with `async: true` everything, is sent in the
     * background) is followed at `GET /broadcasts/{id}` until it is done, and the report
     * resolved with carries the final totals (and `accepted`, the 202's own report);
     * `{ follow: false }` resolves with the 202's report at once. */
    async broadcast(body, { follow = true } = {}) {
      const response = await fetch(`${httpUrl}/broadcast`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const report = await response.json();
      if (!response.ok) throw new Error(`POST /broadcast: ${response.status} ${JSON.stringify(report)}`);
      if (report.status !== 'running' || !follow) return report;
      return this.finished(report);
    },

    /** The report of a broadcast answered 202, once `GET /broadcasts/{id}` says it is
     * done: the final totals, and `accepted`, the 202's own report. */
    async finished(report) {
      const deadline = Date.now() + PATIENCE_MS;
      for (;;) {
        const status = await this.broadcastStatus(report.id);
        if (status.status === 'done') {
          const { recipients, delivered, gone, failed, retries } = status;
          return { ...report, status: 'done', recipients, delivered, gone, failed, retries, accepted: report };
        }
        if (Date.now() > deadline) throw new Error(`broadcast ${report.id} still running after ${PATIENCE_MS} ms`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },

    /** `GET /broadcasts/{id}`: where a broadcast answered 202 stands (the id escaped:
     * ids may hold `/`). */
    async broadcastStatus(id) {
      const response = await fetch(`${httpUrl}/broadcasts/${encodeURIComponent(id)}`);
      const status = await response.json();
      if (!response.ok) throw new Error(`GET /broadcasts: ${response.status} ${JSON.stringify(status)}`);
      return status;
    },

    /** `GET /online?user_id=`: whether the gateway has a live connection of `user`
     * registered. */
    async online(user) {
      const response = await fetch(`${httpUrl}/online?user_id=${encodeURIComponent(user)}`);
      const report = await response.json();
      if (!response.ok) throw new Error(`GET /online: ${response.status} ${JSON.stringify(report)}`);
      return report.online;
    },

    /** `POST @connections/{id}`: a raw post to one connection, as a backend's retry makes. */
    async post(connectionId, body) {
      const response = await fetch(`${managementUrl}/@connections/${encodeURIComponent(connectionId)}`, {
        method: 'POST',
        body: JSON.stringify(body),
      });
      if (response.status !== 200) throw new Error(`POST @connections: ${response.status}`);
    },

    /** `DELETE @connections/{id}`: the server closes the connection (1000). */
    async kill(connectionId) {
      const response = await fetch(`${managementUrl}/@connections/${encodeURIComponent(connectionId)}`, {
        method: 'DELETE',
      });
      if (response.status !== 204) throw new Error(`DELETE @connections: ${response.status}`);
    },

    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid, 'SIGTERM');
      await exited;
    },
  };
}
