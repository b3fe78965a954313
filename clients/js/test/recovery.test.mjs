// Reconnect and recovery against the real local gateway: the server drops a connection
// (`DELETE @connections`), messages are broadcast while the client is away, and the client
// comes back with every one of them, in order, once.
//
// "While away" is made certain rather than hoped for: the client fetches a fresh token
// before each connect, and the test holds that token back until its broadcasts are done.
// Where a test is about a path the app cannot see taken (history paging), the client's
// frames are recorded too, to check the path was taken.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { recordingWebSocket } from './support/frames.mjs';
import { startGateway } from './support/gateway.mjs';
import { broadcastN as broadcastTo, dropAndHold as drop, heldClientsOf } from './support/held.mjs';
import { eventually, nextEvent } from './support/wait.mjs';

let gateway;
let held;

before(async () => {
  gateway = await startGateway();
  held = heldClientsOf(gateway);
});

after(async () => {
  held?.closeAll();
  await gateway?.stop();
});

const heldClient = (user, options) => held.make(user, options);
const dropAndHold = (client) => drop(gateway, client);
const broadcastN = (...args) => broadcastTo(gateway, ...args);

/** The chain of `history` reads with `since` a client made for `topic` (from its recorded
 * frames) until a reply said `more: false`: each read's `since` and its reply. */
function pagedReads(record, topic) {
  const chain = [];
  for (const read of record.sent.filter((f) => f.action === 'history' && f.topic === topic && f.since)) {
    const reply = record.received.find((f) => f.ref === read.ref);
    chain.push({ since: read.since, reply });
    if (!reply?.more) break;
  }
  return chain;
}

/** Checks that `pages` continue `from` (the position the first one asked after) page by
 * page, each asking after the last message of the one before; returns the ids they carried. */
function assertPagesContinue(pages, from) {
  let at = from;
  const ids = [];
  for (const [i, { since, reply }] of pages.entries()) {
    assert.equal(reply?.action, 'history', `page ${i + 1} was answered: ${JSON.stringify(reply)}`);
    assert.deepEqual(since, at, `page ${i + 1} asks after the last message received`);
    assert.ok(reply.messages.length > 0, `page ${i + 1} carries messages`);
    ids.push(...reply.messages.map((m) => m.id));
    const last = reply.messages.at(-1);
    at = { offset: last.offset, epoch: last.epoch };
  }
  return ids;
}

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
    // GIVEN cleo on an empty room; 30 messages of 8 KB (240 KB) broadcast while she is away
    const record = recordingWebSocket();
    const cleo = heldClient('cleo', { WebSocket: record.WebSocket });
    const heard = [];
    await cleo.client.subscribe('room:big', (m) => heard.push(m.id));
    const gateOpen = await dropAndHold(cleo);
    const missed = await broadcastN('room:big', 30, 'big', { pad: 'x'.repeat(8 * 1024) });
    const recovered = nextEvent(cleo.client, 'recovered');
    gateOpen.open();

    // THEN she recovers all 30, in order, once
    assert.equal((await recovered).count, 30);
    assert.deepEqual(heard, missed.map((r) => r.id));
    // AND she read them from the start of the stream in more than one history page
    const pages = pagedReads(record, 'room:big');
    assert.ok(pages.length > 1, `${pages.length} page(s): the test must not fit one reply`);
    const paged = assertPagesContinue(pages, { offset: 0, epoch: missed[0].epoch });
    assert.deepEqual(paged, missed.map((r) => r.id));
  });

  it('goes on with history after a recovering subscribe whose reply says more', async () => {
    // GIVEN cody on a room, having received one message
    const record = recordingWebSocket();
    const cody = heldClient('cody', { WebSocket: record.WebSocket });
    const heard = [];
    await cody.client.subscribe('room:more', (m) => heard.push(m.id));
    const [first] = await broadcastN('room:more', 1, 'before');
    await eventually(() => heard.length === 1, 'the first message');

    // WHEN 30 messages of 8 KB (240 KB) are broadcast while he is away
    const gateOpen = await dropAndHold(cody);
    const missed = await broadcastN('room:more', 30, 'big', { pad: 'x'.repeat(8 * 1024) });
    const recovered = nextEvent(cody.client, 'recovered');
    gateOpen.open();

    // THEN he has every one of them after the first, in order, once
    assert.equal((await recovered).count, 30);
    const ids = missed.map((r) => r.id);
    assert.deepEqual(heard, [first.id, ...ids]);
    assert.deepEqual(cody.client.position('room:more'), { epoch: first.epoch, offset: missed.at(-1).offset });
    // AND the resubscribe asked after the first, and its reply carried the first page
    const resubscribe = record.sent.findLast((f) => f.action === 'subscribe');
    assert.deepEqual(resubscribe.since, { 'room:more': { offset: first.offset, epoch: first.epoch } });
    const stream = record.received.find((f) => f.ref === resubscribe.ref).history['room:more'];
    assert.equal(stream.recovered, true);
    assert.equal(stream.more, true, 'the missed messages must not fit the subscribe reply');
    // AND history was asked after its last message, page by page, for the rest
    const inReply = stream.messages.map((m) => m.id);
    const from = stream.messages.at(-1) ?? first;
    const paged = assertPagesContinue(pagedReads(record, 'room:more'), { offset: from.offset, epoch: from.epoch });
    assert.deepEqual([...inReply, ...paged], ids);
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

describe('broadcasts sent in the background', () => {
  it('delivers one sent in the background between two sent at once in offset order, once', async () => {
    // GIVEN jan in a room with history
    const jan = heldClient('jan');
    const heard = [];
    await jan.client.subscribe('room:background', (m) => heard.push(m.data.text));

    // WHEN a backend broadcasts one message at once, one in the background (its offset is
    // taken when it is accepted, its posts come later, before or after the next one's),
    // and one more at once without waiting for the background
    const [first] = await broadcastN('room:background', 1, 'at once');
    const accepted = await gateway.broadcast(
      { topic: 'room:background', event: 'message', data: { text: 'in the background' }, async: true },
      { follow: false },
    );
    const [last] = await broadcastN('room:background', 1, 'after');
    const background = await gateway.finished(accepted);

    // THEN the bridge answered 202 for the second, and its offset is between the others'
    assert.equal(accepted.status, 'running');
    assert.equal(accepted.status_url, `/broadcasts/${accepted.id}`);
    assert.equal(background.delivered, 1);
    assert.deepEqual([first.offset + 1, first.offset + 2], [accepted.offset, last.offset]);
    // AND jan's client delivered the three in offset order, each once
    await eventually(() => heard.length === 3, 'the three messages');
    await jan.client.whoami();
    assert.deepEqual(heard, ['at once 1', 'in the background', 'after 1']);
    assert.equal(jan.client.position('room:background').offset, last.offset);
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

  it('pages a gap too big for one history reply, then delivers what follows it', async () => {
    // GIVEN gwen on a room
    const record = recordingWebSocket();
    const gwen = heldClient('gwen', { WebSocket: record.WebSocket });
    const heard = [];
    await gwen.client.subscribe('room:gap-big', (m) => heard.push(m.id));
    const { connection_id: id } = await gwen.client.whoami();

    // WHEN 30 messages of 8 KB (240 KB) are kept but not sent to her, then one is sent
    const skipped = await broadcastN('room:gap-big', 30, 'skipped', { pad: 'x'.repeat(8 * 1024) }, { exclude_connection: id });
    for (const report of skipped) assert.equal(report.recipients, 0);
    const recovered = nextEvent(gwen.client, 'recovered');
    const [sent] = await broadcastN('room:gap-big', 1, 'sent');

    // THEN she gets all 31, the missing ones first, in order, once
    const { count } = await recovered;
    const all = [...skipped, sent].map((r) => r.id);
    await eventually(() => heard.length >= all.length, 'every message');
    assert.deepEqual(heard, all);
    // AND the gap was read in more than one page, each asking after the last, from the
    // start of the stream (she held no position), and those pages were what was recovered
    const pages = pagedReads(record, 'room:gap-big');
    assert.ok(pages.length > 1, `${pages.length} page(s): the test must not fit one reply`);
    const paged = assertPagesContinue(pages, { offset: 0, epoch: sent.epoch });
    assert.ok(paged.length >= skipped.length);
    assert.deepEqual(paged, all.slice(0, paged.length));
    assert.equal(count, paged.length);
  });

  it('pages a gap of more messages than one history read returns, while more arrive live', async () => {
    // GIVEN gale on a log (history of 300), having received one message
    const record = recordingWebSocket();
    const gale = heldClient('gale', { WebSocket: record.WebSocket });
    const heard = [];
    await gale.client.subscribe('log:gap', (m) => heard.push(m.id));
    const [first] = await broadcastN('log:gap', 1, 'first');
    await eventually(() => heard.length === 1, 'the first message');
    const { connection_id: id } = await gale.client.whoami();

    // WHEN 250 (a history read returns 100 at most) are kept but not sent to her, then one
    // is sent, and five more race the catch-up it starts
    const skipped = await broadcastN('log:gap', 250, 'skipped', {}, { exclude_connection: id });
    const recovered = nextEvent(gale.client, 'recovered');
    const [sent] = await broadcastN('log:gap', 1, 'sent');
    const racing = await Promise.all(
      Array.from({ length: 5 }, (_, i) => gateway.broadcast({ topic: 'log:gap', event: 'message', data: { i } })),
    );

    // THEN she gets every message after the first, in offset order, once
    const { count } = await recovered;
    const after = [...skipped, sent, ...racing.sort((a, b) => a.offset - b.offset)].map((r) => r.id);
    await eventually(() => heard.length >= 1 + after.length, 'every message');
    assert.deepEqual(heard, [first.id, ...after]);
    assert.deepEqual(gale.client.position('log:gap'), { epoch: first.epoch, offset: first.offset + after.length });
    // AND the gap was read page by page after her position, and those pages were what was recovered
    const pages = pagedReads(record, 'log:gap');
    assert.ok(pages.length > 2, `${pages.length} page(s): 250 messages need three reads of 100`);
    const paged = assertPagesContinue(pages, { offset: first.offset, epoch: first.epoch });
    assert.ok(paged.length >= skipped.length);
    assert.deepEqual(paged, after.slice(0, paged.length));
    assert.equal(count, paged.length);
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
