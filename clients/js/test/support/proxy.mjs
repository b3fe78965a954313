// A TCP proxy in front of the gateway that can go silent: the bytes of the connections it
// carries stop flowing both ways, as when a NAT or a mobile network forgets a connection
// without closing it. New connections still go through. This is how a missing pong is
// produced honestly: the gateway answers every ping it receives.

import net from 'node:net';

export async function startProxy(target) {
  const { hostname, port } = new URL(target.replace(/^ws/, 'http'));
  const live = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    const pair = { client, upstream, silent: false };
    live.add(pair);
    client.on('data', (bytes) => pair.silent || upstream.write(bytes));
    upstream.on('data', (bytes) => pair.silent || client.write(bytes));
    const end = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    /** The connections open now stop carrying anything, in either direction. */
    silence() {
      for (const pair of live) pair.silent = true;
    },
    async stop() {
      for (const pair of live) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
