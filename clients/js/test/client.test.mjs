// The promise API, typed rejections, the re-send of a request refused as rate_limited,
// listeners and room events, against the real local gateway.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import { WsBridgeError } from '../src/index.js';
import { clientsOf } from './support/clients.mjs';
import { recordingWebSocket } from './support/frames.mjs';
import { startGateway } from './support/gateway.mjs';
import { eventually, nextEvent, sleep } from './support/wait.mjs';

/** The second gateway's frame budget per connection: one frame a second, bursts of two. */
const FRAME_BUDGET = { RATE_LIMIT_PER_SECOND: '1', RATE_LIMIT_BURST: '2' };

let gateway;
let limited;
let clients;
let limitedClients;

before(async () => {
  [gateway, limited] = await Promise.all([startGateway(), startGateway({ env: FRAME_BUDGET })]);
  clients = clientsOf(gateway);
  limitedClients = clientsOf(limited);
});

after(async () => {
  clients?.closeAll();
  limitedClients?.closeAll();
  await Promise.all([gateway?.stop(), limited?.stop()]);
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

const withoutRef = ({ ref: _ref, ...frame }) => frame;

/** Every frame of a client's record the gateway refused as rate_limited: the frame, the
 * error, and the frame's re-sends (the same frame under a later ref) with their answers. */
function rateLimited(record) {
  const answer = (frame) => record.received.find((f) => f.ref === frame.ref);
  return record.sent
    .filter((frame) => answer(frame)?.error === 'rate_limited')
    .map((frame) => ({
      frame,
      error: answer(frame),
      resent: record.sent
        .filter((f) => f.ref > frame.ref && isDeepStrictEqual(withoutRef(f), withoutRef(frame)))
        .map((f) => ({ frame: f, answer: answer(f) })),
    }));
}

describe('requests refused as rate_limited', () => {
  it('sends them again after the wait the server names, and resolves each with its reply', async () => {
    // GIVEN mia, connected to the gateway allowing bursts of two frames
    const record = recordingWebSocket();
    const mia = limitedClients.make('mia', { WebSocket: record.WebSocket });
    await mia.opened();

    // WHEN she sends three reads at once
    const [whoami, presence, history] = await Promise.all([
      mia.whoami(),
      mia.presence('room:rl'),
      mia.history('room:rl', { limit: 5 }),
    ]);

    // THEN each resolves with the reply to its own request
    assert.equal(whoami.user_id, 'mia');
    assert.deepEqual([presence.action, presence.topic], ['presence', 'room:rl']);
    assert.deepEqual([history.action, history.topic], ['history', 'room:rl']);
    // AND the one beyond the burst was refused, with a wait, and sent again until answered
    const refused = rateLimited(record);
    assert.ok(refused.length >= 1, 'a frame beyond the burst must be refused');
    for (const { frame, error, resent } of refused) {
      assert.ok(error.retry_after_ms > 0, JSON.stringify(error));
      assert.ok(resent.length >= 1, `${frame.action} was sent again`);
      assert.equal(resent.at(-1).answer.error, undefined, `${frame.action} was answered`);
    }
  });

  it('sends a refused publish again, and it is published once', async () => {
    // GIVEN moe and nat in a room on the limited gateway (moe has spent one frame of two)
    const record = recordingWebSocket();
    const moe = limitedClients.make('moe', { WebSocket: record.WebSocket });
    const nat = limitedClients.make('nat');
    const natHeard = [];
    await nat.subscribe('room:rl-pub', (m) => m.event === 'message' && natHeard.push(m.id));
    await moe.subscribe('room:rl-pub');

    // WHEN moe publishes three messages at once
    const replies = await Promise.all([1, 2, 3].map((n) => moe.publish('room:rl-pub', 'message', { n })));

    // THEN each is published, and nat receives each once, in offset order
    const inOrder = [...replies].sort((a, b) => a.offset - b.offset);
    const ids = inOrder.map((r) => r.id);
    assert.equal(new Set(ids).size, 3);
    await eventually(() => natHeard.length >= 3, 'the three messages');
    assert.deepEqual(natHeard, ids);
    // AND the room kept each once
    const kept = await nat.history('room:rl-pub');
    assert.deepEqual(
      kept.messages.map((m) => m.id),
      ids,
    );
    // AND moe's position is past her three
    assert.equal(moe.position('room:rl-pub').offset, inOrder.at(-1).offset);
    // AND what went beyond her budget was refused first, then sent again
    const refused = rateLimited(record);
    assert.ok(refused.length >= 1, 'a publish beyond the burst must be refused');
    for (const { frame, resent } of refused) {
      assert.equal(frame.action, 'publish');
      assert.equal(resent.at(-1).answer.action, 'published');
    }
  });

  it('rejects with rate_limited and retryAfterMs once its re-sends are spent', async () => {
    // GIVEN ola, whose client does not re-send refused requests
    const ola = limitedClients.make('ola', { rateLimitRetries: 0 });
    await ola.opened();

    // WHEN she sends three reads at once
    const results = await Promise.allSettled([ola.whoami(), ola.whoami(), ola.whoami()]);

    // THEN those within the burst are answered, the one beyond it rejected with the wait
    const answered = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    const rejected = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
    assert.ok(rejected.length >= 1, 'a frame beyond the burst must be refused');
    for (const reply of answered) assert.equal(reply.user_id, 'ola');
    for (const error of rejected) {
      assert.ok(error instanceof WsBridgeError);
      assert.equal(error.code, 'rate_limited');
      assert.ok(error.retryAfterMs > 0, `retryAfterMs ${error.retryAfterMs}`);
    }

    // AND after that wait she is answered again
    await sleep(Math.max(...rejected.map((e) => e.retryAfterMs)));
    assert.equal((await ola.whoami()).user_id, 'ola');
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
