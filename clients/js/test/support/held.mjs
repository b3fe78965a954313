// Clients whose reconnects the test holds back, so "while away" is made certain rather than
// hoped for: a client fetches a fresh token before each connect, and the test keeps that
// token back until its broadcasts are done. All are closed at the end of the test file.

import assert from 'node:assert/strict';

import { connect } from '../../src/index.js';
import { gate, nextEvent } from './wait.mjs';

export function heldClientsOf(gateway) {
  const made = [];
  return {
    /** A client whose reconnects wait for `hold()`'s gate: the first connect goes through.
     * `token` is what a connect signs in with once the gate is open (the gateway's dev
     * token for `user` by default). */
    make(user, { token = () => gateway.token(user), ...options } = {}) {
      let held = null;
      let connects = 0;
      const client = connect({
        url: gateway.wsUrl,
        token: async () => {
          connects += 1;
          if (held) await held.opened;
          return token();
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
    },
    closeAll() {
      for (const client of made) client.close();
    },
  };
}

/** Drops a held client's connection from the server side, holding its reconnect; returns
 * the gate that lets it reconnect. */
export async function dropAndHold(gateway, held) {
  const { connection_id: id } = await held.client.whoami();
  const gateOpen = held.hold();
  const down = nextEvent(held.client, 'disconnect');
  await gateway.kill(id);
  const event = await down;
  assert.equal(event.code, 1000, 'DELETE @connections closes with 1000');
  return gateOpen;
}

/** `n` broadcasts to `topic`, one after the other, each with `data` `{text: "<tag> <i>",
 * ...extra}`; `fields` go into each request (e.g. `exclude_connection`). */
export async function broadcastN(gateway, topic, n, tag, extra = {}, fields = {}) {
  const reports = [];
  for (let i = 1; i <= n; i += 1) {
    reports.push(await gateway.broadcast({ topic, event: 'message', data: { text: `${tag} ${i}`, ...extra }, ...fields }));
  }
  return reports;
}
