// Keeping the connection: tokens on every connect, giving up on refused handshakes, the
// backoff's growth and cap, close codes, keepalive and dead-connection detection — against
// the real gateway.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { connect } from '../src/index.js';
import { clientsOf } from './support/clients.mjs';
import { startGateway } from './support/gateway.mjs';
import { startProxy } from './support/proxy.mjs';
import { eventually, nextEvent, settled, sleep } from './support/wait.mjs';

/** Idle timeout of the second gateway, which closes quiet connections with 1001. */
const IDLE_SECONDS = 3;
/** Longest connection of the third gateway, which then closes it with 1001 (API Gateway's
 * 2-hour limit, shortened). */
const MAX_CONNECTION_SECONDS = 2;

let gateway;
let idleGateway;
let shortGateway;
let clients;
let idleClients;
let shortClients;
const proxies = [];

before(async () => {
  [gateway, idleGateway, shortGateway] = await Promise.all([
    startGateway(),
    startGateway({ args: ['--idle-timeout-seconds', String(IDLE_SECONDS)] }),
    startGateway({ args: ['--max-connection-seconds', String(MAX_CONNECTION_SECONDS)] }),
  ]);
  clients = clientsOf(gateway);
  idleClients = clientsOf(idleGateway);
  shortClients = clientsOf(shortGateway);
});

after(async () => {
  clients?.closeAll();
  idleClients?.closeAll();
  shortClients?.closeAll();
  for (const proxy of proxies) await proxy.stop();
  await Promise.all([gateway?.stop(), idleGateway?.stop(), shortGateway?.stop()]);
});

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected a rejection');
}

describe('tokens and refused handshakes', () => {
  it('asks for a token on every connect and reports its states', async () => {
    // GIVEN a client, and the states it goes through
    const states = [];
    const ann = clients.make('ann');
    ann.on('state', ({ state }) => states.at(-1) !== state && states.push(state));
    await ann.subscribe('news:1');
    const first = (await ann.whoami()).connection_id;

    // WHEN the server drops it twice
    for (let i = 0; i < 2; i += 1) {
      const { connection_id: id } = await ann.whoami();
      const reopened = nextEvent(ann, 'resubscribed');
      await gateway.kill(id);
      await reopened;
    }

    // THEN it fetched a token for each of its three connects, and is on a new connection
    assert.equal(ann.tokenCalls.count, 3);
    assert.notEqual((await ann.whoami()).connection_id, first);
    assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open', 'reconnecting', 'open']);
  });

  it('gives up after the configured number of refused handshakes, and can be told to retry', async () => {
    // GIVEN a client whose token function returns a token the gateway refuses
    let good = false;
    let calls = 0;
    const client = connect({
      url: gateway.wsUrl,
      token: async () => {
        calls += 1;
        return good ? gateway.token('bea') : 'not-a-token';
      },
      maxHandshakeRefusals: 3,
      reconnectBaseMs: 10,
    });
    const pending = client.whoami();
    const closed = nextEvent(client, 'closed');

    // THEN after three refusals it stops, saying why, and what waited is rejected
    const event = await closed;
    assert.deepEqual(event, { reason: 'handshake_refused', refusals: 3 });
    assert.equal(calls, 3);
    assert.equal(client.state, 'closed');
    assert.equal((await rejection(pending)).code, 'handshake_refused');
    assert.equal((await rejection(client.whoami())).code, 'handshake_refused');
    // AND waiting for the connection after it gave up rejects too, instead of never settling
    const waiting = await rejection(settled(client.opened(), 'opened() after giving up'));
    assert.equal(waiting.code, 'handshake_refused', waiting.message);

    // WHEN the token is good again and the app calls reconnect()
    good = true;
    client.reconnect();
    await client.opened();

    // THEN it connects
    assert.equal((await client.whoami()).user_id, 'bea');
    client.close();
  });
});

describe('backoff', () => {
  it('doubles the ceiling of its random wait with each failed attempt, up to the cap', async () => {
    // GIVEN a client refused at every handshake, whose random source is fixed near 1, so
    // each wait is (almost) the ceiling: base 10 ms, cap 30 ms
    let draws = 0;
    const client = connect({
      url: gateway.wsUrl,
      token: () => 'not-a-token',
      maxHandshakeRefusals: 5,
      reconnectBaseMs: 10,
      reconnectMaxMs: 30,
      random: () => {
        draws += 1;
        return 0.999;
      },
    });
    const disconnects = [];
    client.on('disconnect', (event) => disconnects.push(event));

    // WHEN it gives up
    await nextEvent(client, 'closed');

    // THEN the waits grew 10, 20, then stayed at the 30 cap, each a draw below its ceiling,
    // and the fifth refusal ended the attempts
    assert.deepEqual(
      disconnects.map((e) => [e.refusals, e.delayMs]),
      [
        [1, 9],
        [2, 19],
        [3, 29],
        [4, 29],
        [5, null],
      ],
    );
    assert.equal(draws, 4, 'one random draw per wait');
    client.close();
  });
});

describe('close codes', () => {
  it('reconnects at once after 1001 (idle), with backoff after 1000 (deleted)', async () => {
    // GIVEN a client that never pings, whose backoff would wait ~60 s
    const cid = idleClients.make('cid', {
      keepaliveMs: 600_000,
      reconnectBaseMs: 60_000,
      reconnectMaxMs: 120_000,
      random: () => 0.999,
    });
    await cid.opened();

    // WHEN the gateway closes it for idling (1001)
    const idle = await nextEvent(cid, 'disconnect');

    // THEN it reconnects without waiting
    assert.equal(idle.code, 1001);
    assert.equal(idle.delayMs, 0);
    await nextEvent(cid, 'open');

    // WHEN instead the server deletes the connection (1000)
    const { connection_id: id } = await cid.whoami();
    const deleted = nextEvent(cid, 'disconnect');
    await idleGateway.kill(id);

    // THEN the reconnect waits for the backoff
    const event = await deleted;
    assert.equal(event.code, 1000);
    assert.equal(event.delayMs, Math.floor(0.999 * 60_000));
    assert.equal(cid.state, 'reconnecting');
    cid.close();
  });
});

describe('1001 renewals', () => {
  for (const [cause, gatewayOf, clientsFor] of [
    ['the idle timeout', () => idleGateway, () => idleClients],
    ['the connection time limit', () => shortGateway, () => shortClients],
  ]) {
    it(`renews a connection closed with 1001 by ${cause} without a state change, and keeps its messages`, async () => {
      // GIVEN a subscribed client that never pings, whose backoff would wait ~60 s, and
      // every state it reports from now on
      const server = gatewayOf();
      const user = `renew-${cause.split(' ').at(-1)}`;
      const topic = `log:${user}`;
      const client = clientsFor().make(user, {
        keepaliveMs: 600_000,
        reconnectBaseMs: 60_000,
        reconnectMaxMs: 120_000,
        random: () => 0.999,
      });
      await client.subscribe(topic);
      const { connection_id: first } = await client.whoami();
      const states = [];
      client.on('state', (event) => states.push(event));
      const stateAtDisconnect = [];
      client.on('disconnect', () => stateAtDisconnect.push(client.state));
      const received = [];
      client.on('message', (message) => received.push(message));

      // WHEN the gateway closes the connection with 1001, and the client is back
      const disconnect = await nextEvent(client, 'disconnect');
      const resubscribed = await nextEvent(client, 'resubscribed');

      // THEN it reconnected at once and restored the subscription, and no state change was
      // announced: the client was 'open' throughout, as far as a UI can tell
      assert.deepEqual(disconnect, { code: 1001, reason: 'Going away', opened: true, delayMs: 0, refusals: 0 });
      assert.deepEqual(resubscribed.topics, [topic]);
      assert.deepEqual(states, []);
      assert.deepEqual(stateAtDisconnect, ['open']);
      assert.equal(client.state, 'open');
      assert.notEqual((await client.whoami()).connection_id, first);

      // AND a message broadcast on the new connection arrives once
      const report = await server.broadcast({ topic, event: 'message', data: { text: 'after 1001' } });
      await eventually(() => received.some((m) => m.id === report.id), 'the message after the renewal');
      await client.whoami();
      assert.deepEqual(
        received.map((m) => m.id),
        [report.id],
      );
      client.close();
    });
  }

  it('shows reconnecting when the attempt after a 1001 fails', async () => {
    // GIVEN a client whose next token request fails, on the gateway that closes
    // connections after 2 s
    let failNext = false;
    const client = connect({
      url: shortGateway.wsUrl,
      token: async () => {
        if (failNext) {
          failNext = false;
          throw new Error('the token service is down');
        }
        return shortGateway.token('renew-fails');
      },
      keepaliveMs: 600_000,
      reconnectBaseMs: 10,
      random: () => 0.5,
    });
    client.on('error', () => {});
    await client.opened();
    failNext = true;
    const states = [];
    client.on('state', ({ state, previous }) => states.push([previous, state]));

    // WHEN the 1001 comes, and the renewal's token request fails
    await nextEvent(client, 'disconnect', (e) => e.code === 1001);
    await nextEvent(client, 'open');

    // THEN the failure shows as any other: reconnecting, then open again
    assert.deepEqual(states, [
      ['open', 'reconnecting'],
      ['reconnecting', 'open'],
    ]);
    client.close();
  });
});

describe('keepalive', () => {
  it('pings often enough that an idle connection is not closed', async () => {
    // GIVEN a client pinging every 250 ms on a gateway closing connections idle for 3 s
    const dee = idleClients.make('dee', { keepaliveMs: 250 });
    const drops = [];
    dee.on('disconnect', (e) => drops.push(e));
    const { connection_id: id } = await dee.whoami();

    // WHEN it sends nothing else for two and a half idle periods
    await sleep(IDLE_SECONDS * 2_500);

    // THEN it is still on the same connection
    assert.deepEqual(drops, []);
    assert.equal((await dee.whoami()).connection_id, id);
  });

  it('declares a connection without pong dead and reconnects', async () => {
    // GIVEN a client behind a proxy, pinging every 200 ms
    const proxy = await startProxy(gateway.wsUrl);
    proxies.push(proxy);
    const eli = connect({
      url: proxy.url,
      token: () => gateway.token('eli'),
      keepaliveMs: 200,
      pongTimeoutMs: 500,
      random: () => 0,
    });
    const { connection_id: before } = await eli.whoami();

    // WHEN the network silently stops carrying the connection
    const dead = nextEvent(eli, 'disconnect');
    proxy.silence();

    // THEN the missing pong ends it, and it reconnects on a new connection
    assert.deepEqual(await dead, { code: 4000, reason: 'no pong', opened: true, delayMs: 0, refusals: 0 });
    await nextEvent(eli, 'open', (e) => e.reconnected);
    assert.notEqual((await eli.whoami()).connection_id, before);
    eli.close();
  });

  it('rejects a publish caught by a drop with connection_lost, and re-sends reads', async () => {
    const proxy = await startProxy(gateway.wsUrl);
    proxies.push(proxy);
    const fox = connect({
      url: proxy.url,
      token: () => gateway.token('fox'),
      keepaliveMs: 200,
      pongTimeoutMs: 500,
      random: () => 0,
    });
    await fox.subscribe('room:fox');
    const { connection_id: before } = await fox.whoami();

    // WHEN the connection goes silent with a publish and a read in flight
    proxy.silence();
    const publish = fox.publish('room:fox', 'message', { text: 'lost?' });
    const read = fox.whoami();

    // THEN the publish is rejected (it may have gone out), the read answered on the new connection
    assert.equal((await rejection(publish)).code, 'connection_lost');
    const after = await read;
    assert.notEqual(after.connection_id, before);
    fox.close();
  });

  it('rejects a request without reply with timeout', async () => {
    const proxy = await startProxy(gateway.wsUrl);
    proxies.push(proxy);
    const gil = connect({ url: proxy.url, token: () => gateway.token('gil'), requestTimeoutMs: 300 });
    await gil.opened();
    proxy.silence();
    const error = await rejection(gil.whoami());
    assert.equal(error.code, 'timeout');
    gil.close();
    await eventually(() => gil.state === 'closed', 'closed');
  });
});
