// The promise API, typed rejections, listeners and room events, against the real local
// gateway.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { WsBridgeError } from '../src/index.js';
import { clientsOf } from './support/clients.mjs';
import { startGateway } from './support/gateway.mjs';
import { eventually, nextEvent } from './support/wait.mjs';

let gateway;
let clients;

before(async () => {
  gateway = await startGateway();
  clients = clientsOf(gateway);
});

after(async () => {
  clients?.closeAll();
  await gateway?.stop();
});

/** The rejection of `promise`, which must reject. */
async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected a rejection');
}

describe('requests and replies', () => {
  it('answers each request with its own reply, however many are in flight', async () => {
    // GIVEN a connected client subscribed to two rooms
    const alice = clients.make('alice');
    await alice.subscribe(['room:r1', 'room:r2']);

    // WHEN many different requests are sent at once
    const [whoami, p1, p2, h1, pub] = await Promise.all([
      alice.whoami(),
      alice.presence('room:r1'),
      alice.presence('room:r2'),
      alice.history('room:r1', { limit: 5 }),
      alice.publish('room:r2', 'message', { text: 'hi' }),
    ]);

    // THEN each promise has the reply to its own request
    assert.equal(whoami.action, 'whoami');
    assert.equal(whoami.user_id, 'alice');
    assert.match(whoami.connection_id, /^\S+$/);
    assert.deepEqual([p1.topic, p2.topic], ['room:r1', 'room:r2']);
    assert.deepEqual(p1.users, [{ user_id: 'alice', connections: 1 }]);
    assert.equal(h1.action, 'history');
    assert.equal(h1.topic, 'room:r1');
    assert.equal(pub.action, 'published');
    assert.equal(pub.topic, 'room:r2');
    assert.equal(pub.offset, 1);
    // AND replies carry no ref of the client's bookkeeping
    for (const reply of [whoami, p1, p2, h1, pub]) assert.equal(reply.ref, undefined);
  });

  it('rejects with the server error code as a WsBridgeError', async () => {
    const carol = clients.make('carol');
    await carol.subscribe('news:1');

    // Someone else's private topic
    const forbidden = await rejection(carol.subscribe('user:dave'));
    assert.ok(forbidden instanceof WsBridgeError);
    assert.equal(forbidden.code, 'forbidden');
    assert.match(forbidden.details, /user:dave/);

    // A publish without an event name
    const invalid = await rejection(carol.publish('room:x', ''));
    assert.equal(invalid.code, 'invalid_message');

    // Clients may not publish to news
    assert.equal((await rejection(carol.publish('news:1', 'message', {}))).code, 'forbidden');
    // Nor to a room they are not in
    assert.equal((await rejection(carol.publish('room:elsewhere', 'message', {}))).code, 'not_subscribed');
    // news keeps no history
    assert.equal((await rejection(carol.history('news:1'))).code, 'forbidden');
    // A since on a topic without history
    assert.equal((await rejection(carol.history('room:x', { since: { offset: 1 } }))).code, 'invalid_since');

    // THEN the refused subscription is not kept: the client still works and holds news:1 only
    const whoami = await carol.whoami();
    assert.equal(whoami.user_id, 'carol');
  });

  it('rejects requests after close() with code closed', async () => {
    const erin = clients.make('erin');
    await erin.opened();
    erin.close();
    assert.equal(erin.state, 'closed');
    const error = await rejection(erin.whoami());
    assert.equal(error.code, 'closed');
  });
});

describe('listeners', () => {
  it('calls topic and wildcard listeners once per message, and the message event for each', async () => {
    // GIVEN a client subscribed to list:* and list:7, a listener on each, and one on all
    const frank = clients.make('frank');
    const exact = [];
    const wildcard = [];
    const all = [];
    await frank.subscribe('list:7', (m) => exact.push(m.data.n));
    await frank.subscribe('list:*', (m) => wildcard.push(m.data.n));
    frank.on('message', (m) => all.push(m.data.n));

    // WHEN a backend broadcasts to list:7, then list:8
    await gateway.broadcast({ topic: 'list:7', event: 'item', data: { n: 1 } });
    await gateway.broadcast({ topic: 'list:8', event: 'item', data: { n: 2 } });

    // THEN the exact listener heard list:7 only, the wildcard one both, each once
    await eventually(() => all.length === 2, 'both messages');
    assert.deepEqual(exact, [1]);
    assert.deepEqual(wildcard, [1, 2]);
    assert.deepEqual(all, [1, 2]);
  });

  it('unsubscribe stops a topic and removes its listeners', async () => {
    const gina = clients.make('gina');
    const heard = [];
    await gina.subscribe('news:gina', (m) => heard.push(m.data.n));
    await gateway.broadcast({ topic: 'news:gina', event: 'e', data: { n: 1 } });
    await eventually(() => heard.length === 1, 'the first message');

    const reply = await gina.unsubscribe('news:gina');
    assert.deepEqual(reply.topics, ['news:gina']);
    const report = await gateway.broadcast({ topic: 'news:gina', event: 'e', data: { n: 2 } });

    // THEN the server had nobody to send it to, and the listener heard nothing more
    assert.equal(report.recipients, 0);
    assert.deepEqual(heard, [1]);
  });

  it('delivers a message posted twice (a retried post) once', async () => {
    // GIVEN a client on a topic without history, and its connection id
    const hana = clients.make('hana');
    const heard = [];
    await hana.subscribe('news:dup', (m) => heard.push(m.id));
    const { connection_id: id } = await hana.whoami();

    // WHEN the same envelope reaches it twice, then another one
    const envelope = { topic: 'news:dup', event: 'e', data: {}, id: 'same-id', timestamp: Date.now() };
    await gateway.post(id, envelope);
    await gateway.post(id, envelope);
    await gateway.post(id, { ...envelope, id: 'next-id' });

    // THEN it was delivered once, before the next one
    await eventually(() => heard.includes('next-id'), 'the next message');
    assert.deepEqual(heard, ['same-id', 'next-id']);
  });
});

describe('rooms', () => {
  it('reports presence and emits join and leave', async () => {
    // GIVEN ivan in a room
    const ivan = clients.make('ivan');
    await ivan.subscribe('room:lobby');
    const joined = nextEvent(ivan, 'join', (e) => e.userId === 'judy');

    // WHEN judy joins
    const judy = clients.make('judy');
    await judy.subscribe('room:lobby');

    // THEN ivan hears the join, and presence lists both
    assert.deepEqual(
      { topic: (await joined).topic, userId: (await joined).userId },
      { topic: 'room:lobby', userId: 'judy' },
    );
    const presence = await ivan.presence('room:lobby');
    assert.deepEqual(
      presence.users.map((u) => u.user_id),
      ['ivan', 'judy'],
    );

    // WHEN judy leaves, THEN ivan hears it and presence lists him alone
    const left = nextEvent(ivan, 'leave', (e) => e.userId === 'judy');
    await judy.unsubscribe('room:lobby');
    assert.equal((await left).topic, 'room:lobby');
    assert.deepEqual(
      (await ivan.presence('room:lobby')).users.map((u) => u.user_id),
      ['ivan'],
    );
  });

  it('delivers a publish to the others with from set, and to the sender only with echo', async () => {
    const kim = clients.make('kim');
    const leo = clients.make('leo');
    const kimHeard = [];
    const leoHeard = [];
    await kim.subscribe('room:talk', (m) => m.event === 'message' && kimHeard.push(m));
    await leo.subscribe('room:talk', (m) => m.event === 'message' && leoHeard.push(m));

    const quiet = await kim.publish('room:talk', 'message', { text: 'one' });
    const echoed = await kim.publish('room:talk', 'message', { text: 'two' }, { echo: true });

    await eventually(() => leoHeard.length === 2 && kimHeard.length === 1, 'both messages');
    assert.deepEqual(
      leoHeard.map((m) => [m.id, m.from, m.data.text]),
      [
        [quiet.id, 'kim', 'one'],
        [echoed.id, 'kim', 'two'],
      ],
    );
    assert.deepEqual(
      kimHeard.map((m) => m.id),
      [echoed.id],
    );
    // AND kim's position moved past both of her messages
    assert.equal(kim.position('room:talk').offset, echoed.offset);
  });
});
