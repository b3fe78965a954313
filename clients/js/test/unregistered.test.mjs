// A connection the bridge no longer has registered while its socket stays open, against the
// real local gateway: its row expired (or was removed by a close that did not reach the
// socket). The bridge answers every frame but `ping` with `not_connected` before carrying it
// out, and no message reaches that socket any more, so the client reconnects and sends the
// request again on the new connection.
//
// The gateway keeps connection rows for 60 s here (`CONNECTION_TTL_SECONDS`, the least it
// allows) and closes idle sockets only after 10 minutes: the test waits for the row to
// expire, which `GET /online` shows.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { clientsOf } from './support/clients.mjs';
import { recordingWebSocket } from './support/frames.mjs';
import { startGateway } from './support/gateway.mjs';
import { eventually, nextEvent } from './support/wait.mjs';

const ROW_SECONDS = 60;

let gateway;
let clients;

before(async () => {
  gateway = await startGateway({ env: { CONNECTION_TTL_SECONDS: String(ROW_SECONDS) } });
  clients = clientsOf(gateway);
});

after(async () => {
  clients?.closeAll();
  await gateway?.stop();
});

describe('a connection no longer registered', () => {
  it('is replaced, and the request it refused is sent again on the new connection, once', async () => {
    // GIVEN tia in a room, on a connection whose row then expires while its socket stays open
    const record = recordingWebSocket();
    const tia = clients.make('tia', { WebSocket: record.WebSocket, random: () => 0 });
    const tiaHeard = [];
    await tia.subscribe('room:ttl', (m) => m.event === 'message' && tiaHeard.push(m.id));
    const { connection_id: expired } = await tia.whoami();
    await eventually(async () => !(await gateway.online('tia')), "tia's registration to expire", {
      patienceMs: (ROW_SECONDS + 30) * 1000,
      everyMs: 500,
    });
    // AND uma, connected since, in the same room
    const uma = clients.make('uma');
    const umaHeard = [];
    await uma.subscribe('room:ttl', (m) => m.event === 'message' && umaHeard.push(m.id));

    // WHEN tia publishes to the room
    const dropped = nextEvent(tia, 'disconnect');
    const published = await tia.publish('room:ttl', 'message', { text: 'after expiry' });

    // THEN the bridge refused it on the expired connection, which the client gave up on
    const refused = record.sent.find((f) => f.action === 'publish');
    assert.equal(record.received.find((f) => f.ref === refused.ref)?.error, 'not_connected');
    assert.deepEqual(await dropped, { code: 4000, reason: 'not_connected', opened: true, delayMs: 0, refusals: 0 });
    // AND it was published from a new connection, once, and uma received it once
    assert.equal(record.sent.filter((f) => f.action === 'publish').length, 2);
    assert.notEqual((await tia.whoami()).connection_id, expired);
    await eventually(() => umaHeard.includes(published.id), "tia's message at uma");
    // AND tia is in the room again: a later message reaches both, after hers, once each
    const later = await gateway.broadcast({ topic: 'room:ttl', event: 'message', data: { text: 'later' } });
    assert.equal(later.recipients, 2);
    await eventually(() => tiaHeard.includes(later.id) && umaHeard.includes(later.id), 'the later message');
    assert.deepEqual(umaHeard, [published.id, later.id]);
    assert.deepEqual(tiaHeard, [later.id]);
  });
});
