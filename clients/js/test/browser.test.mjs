// The chat demo in a real browser (headless Chromium, driven by playwright-core), served by
// the real local gateway with its default channel configuration: two users in two browser
// contexts join a room, one types and posts, the other sees the typing indicator, the
// message and who is online. Then the server drops one user's connection, messages are
// broadcast while that user is away, and the page shows every one of them, in order, once.
// On a gateway that closes connections with 1001 after 2 s, the page renews its connection
// without its badge ever leaving "connected".
//
// Screenshots go to clients/js/test-output/browser/.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { after, before, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { BINARY, PATIENCE_MS, startGateway } from './support/gateway.mjs';
import { gate } from './support/wait.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUTPUT = fileURLToPath(new URL('../test-output/browser/', import.meta.url));
const ROOM = 'lobby';
/** Messages broadcast while bob is away. */
const MISSED = 8;

let gateway;
let browser;
const started = Date.now();

before(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  // No --channels: the gateway's default, the chat example, is what the demo runs on.
  gateway = await startGateway({ channels: null });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  await gateway?.stop();
  console.log(`browser test: ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${OUTPUT}`);
});

/** The demo opened as `user`, in a browser context of its own, through the sign-in form
 * (`viaForm`) or the `?user=` link. Its sign-in requests (one per connect) pass only while
 * its gate is open. */
async function openAs(user, { viaForm = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  context.setDefaultTimeout(PATIENCE_MS);
  let tokens = null;
  await context.route('**/demo/token', async (route) => {
    if (tokens) await tokens.opened;
    await route.continue();
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  if (viaForm) {
    await page.goto(`${gateway.httpUrl}/?room=${ROOM}`);
    await page.locator('#name').fill(user);
    await page.screenshot({ path: `${OUTPUT}00-sign-in.png` });
    await page.locator('#sign-in-form button').click();
  } else {
    await page.goto(`${gateway.httpUrl}/?user=${user}&room=${ROOM}`);
  }
  await page.waitForSelector('#status[data-state="connected"]');
  return {
    page,
    errors,
    holdTokens() {
      tokens = gate();
      return tokens;
    },
    shot: (name) => page.screenshot({ path: `${OUTPUT}${name}.png` }),
    connectionId: () => page.evaluate(() => document.body.dataset.connectionId),
    messageIds: () => page.$$eval('#messages li.message', (lines) => lines.map((l) => l.dataset.id)),
    online: () => page.$$eval('#online li', (items) => items.map((i) => i.dataset.user)),
  };
}

async function waitForOnline(view, users) {
  await view.page.waitForFunction(
    (expected) => [...document.querySelectorAll('#online li')].map((i) => i.dataset.user).join() === expected,
    users.join(),
  );
}

it('two users chat; a dropped connection comes back with every message, in order, once', async () => {
  // GIVEN alice and bob on the demo, in the same room
  const alice = await openAs('alice', { viaForm: true });
  const bob = await openAs('bob');
  await bob.page.waitForFunction(() => document.body.dataset.connectionId);

  // THEN each sees both online
  await waitForOnline(alice, ['alice', 'bob']);
  await waitForOnline(bob, ['alice', 'bob']);

  // WHEN alice types, THEN bob sees the typing indicator
  await alice.page.locator('#text').pressSequentially('hello bob', { delay: 20 });
  await bob.page.waitForFunction(() => document.querySelector('#typing').textContent === 'alice is typing…');
  await bob.shot('01-bob-sees-alice-typing');

  // WHEN alice sends it, THEN bob sees the message, from alice, and the indicator goes
  await alice.page.locator('#text').press('Enter');
  const said = bob.page.locator('#messages li.message', { hasText: 'hello bob' });
  await said.waitFor();
  assert.equal(await said.locator('.author').textContent(), 'alice');
  await bob.page.waitForFunction(() => document.querySelector('#typing').textContent === '');
  await alice.shot('02-alice-after-posting');
  const [hello] = await alice.messageIds();
  assert.deepEqual(await bob.messageIds(), [hello]);

  // WHEN the server drops bob's connection and holds his reconnect
  const before = await bob.connectionId();
  const tokens = bob.holdTokens();
  await gateway.kill(before);
  await bob.page.waitForSelector('#status[data-state="reconnecting"]');
  await waitForOnline(alice, ['alice']);
  await bob.shot('03-bob-reconnecting');

  // AND messages are broadcast to the room meanwhile, reaching alice only
  const missed = [];
  for (let i = 1; i <= MISSED; i += 1) {
    const report = await gateway.broadcast({
      topic: `room:${ROOM}`,
      event: 'message',
      data: { text: `while bob was away #${i}` },
    });
    assert.equal(report.delivered, 1, `message ${i} reached alice only`);
    missed.push(report.id);
  }
  tokens.open();

  // THEN bob is back on a new connection and shows every message, in order, exactly once
  await bob.page.waitForFunction((old) => document.body.dataset.connectionId && document.body.dataset.connectionId !== old, before);
  await bob.page.waitForSelector('#status[data-state="connected"]');
  const expected = [hello, ...missed];
  await bob.page.waitForFunction((n) => document.querySelectorAll('#messages li.message').length >= n, expected.length);
  assert.deepEqual(await bob.messageIds(), expected);
  assert.deepEqual(await alice.messageIds(), expected);
  // AND both see each other online again
  await waitForOnline(alice, ['alice', 'bob']);
  await waitForOnline(bob, ['alice', 'bob']);
  await bob.shot('04-bob-recovered');
  await alice.shot('05-alice-after-recovery');

  // WHEN carol opens the room later, THEN she sees what was said before she came, in order
  const carol = await openAs('carol');
  await carol.page.waitForFunction((n) => document.querySelectorAll('#messages li.message').length >= n, expected.length);
  assert.deepEqual(await carol.messageIds(), expected);
  await waitForOnline(carol, ['alice', 'bob', 'carol']);
  await carol.shot('06-carol-joins-later');
  assert.deepEqual([...alice.errors, ...bob.errors, ...carol.errors], []);
});

it('without the dev secret, the page explains, and signs in with ?token= and ?ws=', async () => {
  // GIVEN a gateway verifying with a secret of its own (no demo sign-in)
  const own = await startGateway({ channels: null, env: { JWT_SECRET: 'a-secret-of-our-own-at-least-32-bytes-long' } });
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  context.setDefaultTimeout(PATIENCE_MS);
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(error));

    // WHEN the page is opened with a name only, THEN it says how to sign in
    await page.goto(`${own.httpUrl}/?user=zoe`);
    const explained = page.locator('#sign-in-error');
    await explained.waitFor();
    assert.match(await explained.textContent(), /\?token=<JWT>&ws=<WebSocket URL>/);

    // WHEN it is opened with a token the gateway accepts and the WebSocket URL
    const token = execFileSync(BINARY, ['token', '--sub', 'zoe'], { env: own.env }).toString().trim();
    await page.goto(`${own.httpUrl}/?token=${token}&ws=${own.wsUrl}&room=quiet`);

    // THEN it connects as that user, who is online in the room
    await page.waitForSelector('#status[data-state="connected"]');
    await page.waitForFunction(() => document.querySelector('#who').textContent === 'zoe');
    await page.waitForFunction(() => document.querySelector('#online li')?.textContent === 'zoe (you)');
    await page.screenshot({ path: `${OUTPUT}07-signed-in-with-a-token.png` });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await own.stop();
  }
});

it("API Gateway's 1001 renews the connection without the badge ever leaving connected", async () => {
  // GIVEN a gateway that closes every connection with 1001 after 2 s (its 2-hour limit,
  // shortened), and the demo open on it, recording every change of its badge
  const short = await startGateway({ channels: null, args: ['--max-connection-seconds', '2'] });
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  context.setDefaultTimeout(PATIENCE_MS);
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(error));
    await page.goto(`${short.httpUrl}/?user=uma&room=renewal`);
    await page.waitForSelector('#status[data-state="connected"]');
    await page.waitForFunction(() => document.body.dataset.connectionId);
    const first = await page.evaluate(() => {
      window.badgeChanges = [];
      const record = () =>
        window.badgeChanges.push(
          `${document.querySelector('#status').dataset.state}${document.querySelector('#chat').hasAttribute('data-offline') ? ' (dimmed)' : ''}`,
        );
      const observer = new MutationObserver(record);
      observer.observe(document.querySelector('#status'), { attributes: true, attributeFilter: ['data-state'] });
      observer.observe(document.querySelector('#chat'), { attributes: true, attributeFilter: ['data-offline'] });
      return document.body.dataset.connectionId;
    });

    // WHEN the gateway closes its connection with 1001, twice
    let seen = first;
    for (let renewal = 1; renewal <= 2; renewal += 1) {
      await page.waitForFunction((old) => document.body.dataset.connectionId !== old, seen);
      seen = await page.evaluate(() => document.body.dataset.connectionId);
    }

    // THEN the page is on a new connection, still in the room: a message broadcast now shows
    const report = await short.broadcast({ topic: 'room:renewal', event: 'message', data: { text: 'after two renewals' } });
    await page.locator('#messages li.message', { hasText: 'after two renewals' }).waitFor();
    assert.equal(report.delivered, 1);
    await page.screenshot({ path: `${OUTPUT}08-after-1001-renewals.png` });
    // AND the badge never changed, nor was the room dimmed as offline
    assert.deepEqual(await page.evaluate(() => window.badgeChanges), []);
    assert.equal(await page.locator('#status').getAttribute('data-state'), 'connected');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await short.stop();
  }
});
