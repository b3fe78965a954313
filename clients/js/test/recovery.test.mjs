// Reconnect and recovery against the real local gateway: the server drops a connection
// (`DELETE @connections`), messages are broadcast while the client is away, and the client
// comes back with every one of them, in order, once.
//
// "While away" is made certain rather than hoped for: the client fetches a fresh token
// before each connect, and the test holds that token back until its broadcasts are done.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { connect } from '../src/index.js';
import { startGateway } from './support/gateway.mjs';
import { eventually, gate, nextEvent } from './support/wait.mjs';

let gateway;
const made = [];

before(async () => {
  gateway = await startGateway();
});

after(async () => {
  for (const client of made) client.close();
  await gateway?.stop();
});

/** A client whose reconnects wait for `hold()`'s gate: the first connect goes through. */
function heldClient(user, options = {}) {
  let held = null;
  let connects = 0;
  const client = connect({
    url: gateway.wsUrl,
    token: async () => {
      connects += 1;
      if (held) await held.opened;
      return gateway.token(user);
    },
    ...options,
  });
  made.push(client);
  return {
    client,
    connects: () => connects,
    hold() {
      held = gate();
      return held;
    },
  };
}

/** Drops the client's connection from the server side, holding its reconnect. */
async function dropAndHold(held) {
  const { connection_id: id } = await held.client.whoami();
  const gateOpen = held.hold();
  const down = nextEvent(held.client, 'disconnect');
  await gateway.kill(id);
  const event = await down;
  assert.equal(event.code, 1000, 'DELETE @connections closes with 1000');
  return gateOpen;
}

const broadcastN = async (topic, n, tag, extra = {}) => {
  const reports = [];
  for (let i = 1; i <= n; i += 1) {
    reports.push(await gateway.broadcast({ topic, event: 'message', data: { text: `${tag} ${i}`, ...extra } }));
  }
  return reports;
};

describe('recovery after a reconnect', () => {
  it('delivers what was broadcast while away, in order, once, with a fresh token', async () => {
    // GIVEN bob in a room, having received one message
    const bob = heldClient('bob');
    const heard = [];
    await bob.client.subscribe('room:1', (m) => heard.push(m.id));
    const [first] = await broadcastN('room:1', 1, 'before');
    await eventually(() => heard.length === 1, 'the first message');

    // WHEN the server drops him and 10 messages are broadcast before he can reconnect
    const gateOpen = await dropAndHold(bob);
    const missed = await broadcastN('room:1', 10, 'missed');
    for (const report of missed) assert.equal(report.delivered, 0, 'nobody was connected to receive it');
    const recovered = nextEvent(bob.client, 'recovered');
    gateOpen.open();

    // THEN after reconnecting he has every message, in order, exactly once
    assert.equal((await recovered).count, 10);
    const after = await gateway.broadcast({ topic: 'room:1', event: 'message', data: { text: 'after' } });
    await eventually(() => heard.includes(after.id), 'the live message after recovery');
    assert.deepEqual(heard, [first.id, ...missed.map((r) => r.id), after.id]);
    assert.deepEqual(bob.client.position('room:1'), { epoch: after.epoch, offset: after.offset });
    // AND it asked for a token for each of its two connects
    assert.equal(bob.connects(), 2);
  });

  it('pages with history when what was missed does not fit one reply', async () => {
    // GIVEN cleo on a room; 30 messages of 8 KB (240 KB) broadcast while she is away
    const cleo = heldClient('cleo');
    const heard = [];
    await cleo.client.subscribe('room:big', (m) => heard.push(m.id));
    const gateOpen = await dropAndHold(cleo);
    const missed = await broadcastN('room:big', 30, 'big', { pad: 'x'.repeat(8 * 1024) });
    const recovered = nextEvent(cleo.client, 'recovered');
    gateOpen.open();

    // THEN she recovers all 30 (over more than one reply), in order, once
    assert.equal((await recovered).count, 30);
    assert.deepEqual(heard, missed.map((r) => r.id));
  });

  it('reports recovered: false when more was missed than the topic keeps, and goes on live', async () => {
    // GIVEN dan on small:1 (keeps 3 messages), having received one
    const dan = heldClient('dan');
    const heard = [];
    await dan.client.subscribe('small:1', (m) => heard.push(m.id));
    const [first] = await broadcastN('small:1', 1, 'before');
    await eventually(() => heard.length === 1, 'the first message');

    // WHEN 6 are broadcast while he is away
    const gateOpen = await dropAndHold(dan);
    const missed = await broadcastN('small:1', 6, 'missed');
    const failed = nextEvent(dan.client, 'recovery-failed');
    gateOpen.open();

    // THEN he is told, with the position to go on from, and nothing missed is delivered
    const event = await failed;
    assert.deepEqual(event, { topic: 'small:1', epoch: first.epoch, offset: missed.at(-1).offset });
    assert.deepEqual(dan.client.position('small:1'), { epoch: first.epoch, offset: missed.at(-1).offset });
    // AND the next message is delivered live
    const [next] = await broadcastN('small:1', 1, 'next');
    await eventually(() => heard.includes(next.id), 'the next message');
    assert.deepEqual(heard, [first.id, next.id]);
  });

  it('does not deliver its own publishes (without echo) back through a recovery', async () => {
    // GIVEN eve and fay in a room; eve publishes twice, without echo
    const eve = heldClient('eve');
    const fay = heldClient('fay');
    const eveHeard = [];
    await eve.client.subscribe('room:own', (m) => m.event === 'message' && eveHeard.push(m.data.text));
    await fay.client.subscribe('room:own');
    await eve.client.publish('room:own', 'message', { text: 'mine 1' });
    await eve.client.publish('room:own', 'message', { text: 'mine 2' });

    // WHEN eve is dropped and fay publishes twice meanwhile
    const gateOpen = await dropAndHold(eve);
    await fay.client.publish('room:own', 'message', { text: 'fay 1' });
    const last = await fay.client.publish('room:own', 'message', { text: 'fay 2' });
    const recovered = nextEvent(eve.client, 'recovered');
    gateOpen.open();

    // THEN eve recovers fay's two only, and stands at the last offset
    assert.equal((await recovered).count, 2);
    assert.deepEqual(eveHeard, ['fay 1', 'fay 2']);
    assert.equal(eve.client.position('room:own').offset, last.offset);
  });
});

describe('recovery racing live messages', () => {
  it('delivers every message once, in order, when broadcasts race the reconnect', async () => {
    // GIVEN ida in a room, reconnecting as fast as she can (no token gate)
    const ida = heldClient('ida', { random: () => 0 });
    const heard = [];
    await ida.client.subscribe('room:race', (m) => heard.push(m.id));
    const sent = [];
    for (let round = 1; round <= 5; round += 1) {
      // WHEN her connection is deleted and 20 messages are broadcast at once, some before
      // she is back, some while her recovering subscribe is in flight, some after
      const { connection_id: id } = await ida.client.whoami();
      const back = nextEvent(ida.client, 'resubscribed');
      await gateway.kill(id);
      const reports = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          gateway.broadcast({ topic: 'room:race', event: 'message', data: { round, i } }),
        ),
      );
      await back;
      sent.push(...reports.sort((a, b) => a.offset - b.offset).map((r) => r.id));
      // THEN she ends up with all of them, in offset order, once
      await eventually(() => heard.length >= sent.length, `round ${round}'s messages`);
      assert.deepEqual(heard, sent, `round ${round}`);
    }
  });
});

describe('gaps and duplicates while connected', () => {
  it('fills a gap from history before delivering what follows it', async () => {
    // GIVEN gus on a room
    const gus = heldClient('gus');
    const heard = [];
    await gus.client.subscribe('room:gap', (m) => heard.push(m.id));
    const { connection_id: id } = await gus.client.whoami();

    // WHEN one message is kept but not sent to him (excluded), then another is sent
    const skipped = await gateway.broadcast({ topic: 'room:gap', event: 'message', data: {}, exclude_connection: id });
    assert.equal(skipped.recipients, 0);
    const sent = await gateway.broadcast({ topic: 'room:gap', event: 'message', data: {} });

    // THEN he gets both, the missing one first
    await eventually(() => heard.length === 2, 'both messages');
    assert.deepEqual(heard, [skipped.id, sent.id]);
  });

  it('drops a message at or below the position it holds', async () => {
    // GIVEN hal on a room who received two messages
    const hal = heldClient('hal');
    const heard = [];
    const envelopes = [];
    await hal.client.subscribe('room:dup', (m) => {
      heard.push(m.id);
      envelopes.push(m);
    });
    await broadcastN('room:dup', 2, 'm');
    await eventually(() => heard.length === 2, 'two messages');
    const { connection_id: id } = await hal.client.whoami();

    // WHEN the first is posted to him again under a new id (same offset), then a new one
    await gateway.post(id, { ...envelopes[0], id: 'replayed-with-new-id' });
    const [third] = await broadcastN('room:dup', 1, 'm');

    // THEN the replay is dropped by its offset
    await eventually(() => heard.includes(third.id), 'the third message');
    assert.deepEqual(heard, [envelopes[0].id, envelopes[1].id, third.id]);
  });
});
