// Restoring subscriptions after a reconnect when the server refuses some of them, against
// the real local gateway: the client resubscribes every topic in one frame, which one
// refused topic refuses as a whole; it then asks for each topic alone, keeps those allowed
// (with what they missed) and drops the others with a `subscription-error`.
//
// The gateway verifies tokens the test signs, so a token's grants can change between two
// connects, as when a user loses access to a team while offline; the client's frames are
// recorded to check the path taken.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { recordingWebSocket } from './support/frames.mjs';
import { startGateway } from './support/gateway.mjs';
import { broadcastN, dropAndHold, heldClientsOf } from './support/held.mjs';
import { signToken, TEST_SECRET } from './support/tokens.mjs';
import { eventually, nextEvent } from './support/wait.mjs';

let gateway;
let held;

before(async () => {
  gateway = await startGateway({ env: { JWT_SECRET: TEST_SECRET } });
  held = heldClientsOf(gateway);
});

after(async () => {
  held?.closeAll();
  await gateway?.stop();
});

describe('a resubscribe refused after a reconnect', () => {
  it('restores the topics still allowed one by one, and drops the refused one with an event', async () => {
    // GIVEN kai, whose token grants team:a and team:b, on both teams, a room and news, having
    // received one message on each topic with history
    let grants = ['team:a', 'team:b'];
    const record = recordingWebSocket();
    const kai = held.make('kai', { token: () => signToken('kai', { channels: grants }), WebSocket: record.WebSocket });
    const topics = ['team:a', 'team:b', 'room:kai', 'news:kai'];
    const kept = topics.slice(0, 3);
    const heard = Object.fromEntries(topics.map((t) => [t, []]));
    await kai.client.subscribe(topics, (m) => heard[m.topic].push(m.id));
    const firsts = {};
    for (const topic of kept) [firsts[topic]] = await broadcastN(gateway, topic, 1, 'before');
    await eventually(() => kept.every((t) => heard[t].length === 1), 'the first messages');

    // WHEN he is dropped, team:a is no longer granted, and each topic with history gets two
    // messages while he is away
    const gateOpen = await dropAndHold(gateway, kai);
    grants = ['team:b'];
    const missed = {};
    for (const topic of kept) missed[topic] = await broadcastN(gateway, topic, 2, 'missed');
    const refusals = [];
    kai.client.on('subscription-error', (event) => refusals.push(event));
    const resubscribed = nextEvent(kai.client, 'resubscribed');
    gateOpen.open();

    // THEN he is told team:a was refused, and the others are restored
    const { topics: restored } = await resubscribed;
    assert.deepEqual([...restored].sort(), ['news:kai', 'room:kai', 'team:b']);
    assert.deepEqual(
      refusals.map((e) => [e.topic, e.error.code]),
      [['team:a', 'forbidden']],
    );
    // AND the restored topics with history recovered what they missed, in order, once
    for (const topic of ['team:b', 'room:kai']) {
      const ids = [firsts[topic], ...missed[topic]].map((r) => r.id);
      await eventually(() => heard[topic].length >= ids.length, `${topic}'s missed messages`);
      assert.deepEqual(heard[topic], ids, topic);
      assert.deepEqual(kai.client.position(topic), { epoch: firsts[topic].epoch, offset: missed[topic].at(-1).offset });
    }
    // AND nothing missed on team:a was delivered, and it is no longer tracked
    assert.deepEqual(heard['team:a'], [firsts['team:a'].id]);
    assert.equal(kai.client.position('team:a'), undefined);

    // AND the whole resubscribe was refused first, then each topic was asked for alone,
    // with its position
    const resubscribes = record.sent.filter((f) => f.action === 'subscribe').slice(1);
    assert.deepEqual([...resubscribes[0].topics].sort(), [...topics].sort());
    assert.equal(record.received.find((f) => f.ref === resubscribes[0].ref)?.error, 'forbidden');
    const alone = resubscribes.slice(1);
    assert.deepEqual(alone.map((f) => f.topics).flat().sort(), [...topics].sort());
    for (const frame of alone) {
      const [topic] = frame.topics;
      const since = kept.includes(topic) ? { [topic]: { offset: firsts[topic].offset, epoch: firsts[topic].epoch } } : undefined;
      assert.deepEqual(frame.since, since, topic);
    }

    // AND live messages reach him on every topic but team:a, where the server has no
    // subscription of his
    const live = {};
    for (const topic of topics) [live[topic]] = await broadcastN(gateway, topic, 1, 'live');
    assert.equal(live['team:a'].recipients, 0);
    for (const topic of topics.slice(1)) {
      await eventually(() => heard[topic].includes(live[topic].id), `the live message on ${topic}`);
    }
    assert.deepEqual(heard['team:a'], [firsts['team:a'].id]);
    kai.client.close();
  });

  it('drops every topic refused alone, and announces no resubscribe when none is left', async () => {
    // GIVEN lea, whose token grants team:x and team:y, on both
    let grants = ['team:x', 'team:y'];
    const lea = held.make('lea', { token: () => signToken('lea', { channels: grants }) });
    await lea.client.subscribe(['team:x', 'team:y']);
    let resubscribes = 0;
    lea.client.on('resubscribed', () => {
      resubscribes += 1;
    });
    const refusals = [];
    lea.client.on('subscription-error', (event) => refusals.push(event));

    // WHEN she reconnects with a token granting neither
    const gateOpen = await dropAndHold(gateway, lea);
    grants = [];
    gateOpen.open();

    // THEN each topic is refused on its own, with an event
    await eventually(() => refusals.length === 2, 'both refusals');
    assert.deepEqual(refusals.map((e) => [e.topic, e.error.code]).sort(), [
      ['team:x', 'forbidden'],
      ['team:y', 'forbidden'],
    ]);
    // AND she is connected, holding no subscription (a broadcast reaches nobody), and was
    // never told her subscriptions were restored
    assert.equal((await lea.client.whoami()).user_id, 'lea');
    assert.equal((await gateway.broadcast({ topic: 'team:x', event: 'message', data: {} })).recipients, 0);
    assert.equal(resubscribes, 0);
    lea.client.close();
  });
});
