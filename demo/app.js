// The chat demo, written on clients/js: rooms (`room:<name>`, with history), a typing
// indicator beside each (`typing:<name>`), who is online (presence, then join/leave), and
// the connection's state. Every message is rendered as the client delivers it — once, in
// order, across reconnects — so the page keeps no de-duplication of its own.

import { connect } from '../clients/js/src/index.js';

const params = new URLSearchParams(location.search);
const ROOMS = ['general', 'random', 'help'];
/** Send "typing" at most this often while the user types. */
const TYPING_EVERY_MS = 2_000;
/** Hide someone's indicator after this long without a refresh. */
const TYPING_SHOWN_MS = 5_000;
/** Messages shown from before joining a room. */
const EARLIER = 50;

const $ = (id) => document.getElementById(id);

const chat = {
  client: null,
  me: params.get('user') ?? '',
  room: null,
  rooms: [...ROOMS],
  online: new Set(),
  typing: new Map(),
  lastTypingSent: 0,
};

function start() {
  if (!chat.me && !params.get('token')) {
    showSignIn();
    return;
  }
  openChat().catch((error) => showSignIn(error.message));
}

function showSignIn(message) {
  $('chat').hidden = true;
  $('sign-in').hidden = false;
  if (message) {
    $('sign-in-error').textContent = message;
    $('sign-in-error').hidden = false;
  }
  $('sign-in-form').onsubmit = (event) => {
    event.preventDefault();
    const name = $('name').value.trim();
    if (!name) return;
    params.set('user', name);
    history.replaceState(null, '', `?${params}`);
    chat.me = name;
    $('sign-in').hidden = true;
    openChat().catch((error) => showSignIn(error.message));
  };
}

/** A dev token from the local gateway (`POST /demo/token`): asked again on every
 * (re)connect, as a real app would refresh a short-lived token. */
async function signIn(user) {
  const response = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(
      response.status === 404
        ? 'This gateway does not hand out demo tokens (it is not using the dev secret): open this page with ?token=<JWT>&ws=<WebSocket URL>.'
        : body.details ?? `sign-in failed (${response.status})`,
    );
  }
  return response.json();
}

async function openChat() {
  let url = params.get('ws');
  let token = params.get('token');
  if (!token) {
    const first = await signIn(chat.me);
    url ??= first.ws_url;
    token = async () => (await signIn(chat.me)).token;
  }
  url ??= `ws://${location.hostname}:3001`;
  const client = connect({ url, token });
  chat.client = client;
  wire(client);
  $('chat').hidden = false;
  $('who').hidden = !chat.me;
  $('who').textContent = chat.me;
  setUpComposer();
  setUpRooms();
  await joinRoom(params.get('room') ?? ROOMS[0]);
}

function wire(client) {
  client.on('state', ({ state, reason }) => {
    const shown = { open: 'connected', connecting: 'connecting…', reconnecting: 'reconnecting…', closed: 'offline' }[state];
    $('status').dataset.state = state === 'open' ? 'connected' : state === 'closed' ? 'offline' : 'reconnecting';
    $('status').querySelector('.label').textContent = shown;
    // Who is online is only known while connected: dimmed until the next presence answer.
    $('chat').toggleAttribute('data-offline', state !== 'open');
    if (reason === 'handshake_refused') {
      notice('Could not connect: the sign-in was refused. Click to retry.', () => client.reconnect());
    }
  });
  client.on('open', async () => {
    const me = await client.whoami().catch(() => null);
    if (!me) return;
    if (!chat.me) {
      // Signed in with ?token=: who we are is known only now.
      chat.me = me.user_id;
      renderOnline();
    }
    $('who').hidden = false;
    $('who').textContent = chat.me;
    $('connection-id').textContent = me.connection_id;
    document.body.dataset.connectionId = me.connection_id;
  });
  // Join/leave events missed while away: ask again who is here.
  client.on('resubscribed', () => refreshPresence());
  client.on('join', ({ topic, userId }) => {
    if (topic !== roomTopic()) return;
    chat.online.add(userId);
    renderOnline();
    systemLine(`${userId} joined`);
  });
  client.on('leave', ({ topic, userId }) => {
    if (topic !== roomTopic()) return;
    chat.online.delete(userId);
    renderOnline();
    systemLine(`${userId} left`);
  });
  client.on('recovered', ({ topic, count }) => {
    if (topic === roomTopic() && count > 0) notice(`Back online: caught up on ${count} message${count === 1 ? '' : 's'}.`);
  });
  client.on('recovery-failed', async ({ topic, epoch, offset }) => {
    if (topic !== roomTopic()) return;
    notice('Too much was missed to recover message by message: reloaded the latest.');
    $('messages').replaceChildren();
    await loadEarlier(chat.room, { epoch, offset });
  });
  client.on('subscription-error', ({ topic, error }) => notice(`${topic}: ${error.details}`));
}

const roomTopic = (room = chat.room) => `room:${room}`;
const typingTopic = (room = chat.room) => `typing:${room}`;

async function joinRoom(room) {
  if (room === chat.room) return;
  const previous = chat.room;
  chat.room = room;
  params.set('room', room);
  history.replaceState(null, '', `?${params}`);
  if (!chat.rooms.includes(room)) chat.rooms.push(room);
  renderRooms();
  $('room-title').textContent = `# ${room}`;
  $('messages').replaceChildren();
  chat.typing.forEach((timer) => clearTimeout(timer));
  chat.typing.clear();
  renderTyping();
  chat.online = new Set();
  renderOnline();
  const client = chat.client;
  if (previous) client.unsubscribe([roomTopic(previous), typingTopic(previous)]).catch(showError);
  try {
    const reply = await client.subscribe([roomTopic(room), typingTopic(room)], onRoomMessage);
    await loadEarlier(room, reply.history?.[roomTopic(room)]);
    await refreshPresence();
  } catch (error) {
    showError(error);
  }
}

/** The messages from before this page joined: kept history up to the position the
 * subscribe reply gave. Everything after it is delivered live by the client. */
async function loadEarlier(room, at) {
  if (!at?.epoch || !at.offset) return;
  const reply = await chat.client.history(roomTopic(room), { limit: EARLIER });
  if (room !== chat.room) return;
  const earlier = reply.messages.filter((m) => m.epoch === at.epoch && m.offset <= at.offset);
  const list = $('messages');
  const first = list.firstChild;
  for (const message of earlier) {
    if (message.event === 'message') list.insertBefore(messageLine(message), first);
  }
  scrollDown();
}

function onRoomMessage(message) {
  if (message.topic === typingTopic()) {
    onTyping(message);
    return;
  }
  if (message.topic !== roomTopic() || message.event !== 'message') return;
  $('messages').append(messageLine(message));
  if (message.from) stopTyping(message.from);
  scrollDown();
}

function messageLine(message) {
  const line = document.createElement('li');
  const author = message.from ?? 'server';
  line.className = `message${author === chat.me ? ' mine' : ''}`;
  line.dataset.id = message.id;
  if (message.offset !== undefined) line.dataset.offset = message.offset;
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.textContent = author.slice(0, 1).toUpperCase();
  avatar.style.background = colourOf(author);
  const head = document.createElement('div');
  head.className = 'head';
  const name = document.createElement('span');
  name.className = 'author';
  name.textContent = author;
  const time = document.createElement('time');
  time.textContent = new Date(message.timestamp).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  head.append(name, time);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = typeof message.data?.text === 'string' ? message.data.text : JSON.stringify(message.data);
  const body = document.createElement('div');
  body.className = 'body';
  body.append(head, text);
  line.append(avatar, body);
  return line;
}

function systemLine(text) {
  const line = document.createElement('li');
  line.className = 'system';
  line.textContent = text;
  $('messages').append(line);
  scrollDown();
}

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function colourOf(name) {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

// ---- typing ----------------------------------------------------------------------------

function onTyping(message) {
  const who = message.from;
  if (!who || who === chat.me) return;
  if (message.data?.typing === false) {
    stopTyping(who);
    return;
  }
  clearTimeout(chat.typing.get(who));
  chat.typing.set(who, setTimeout(() => stopTyping(who), TYPING_SHOWN_MS));
  renderTyping();
}

function stopTyping(who) {
  if (!chat.typing.has(who)) return;
  clearTimeout(chat.typing.get(who));
  chat.typing.delete(who);
  renderTyping();
}

function renderTyping() {
  const names = [...chat.typing.keys()];
  $('typing').textContent =
    names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

// ---- composer and rooms ----------------------------------------------------------------

function setUpComposer() {
  const input = $('text');
  input.addEventListener('input', () => {
    const now = Date.now();
    if (!input.value || now - chat.lastTypingSent < TYPING_EVERY_MS) return;
    chat.lastTypingSent = now;
    chat.client.publish(typingTopic(), 'typing', { typing: true }).catch(() => {});
  });
  $('composer').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    if (chat.lastTypingSent) {
      chat.lastTypingSent = 0;
      chat.client.publish(typingTopic(), 'typing', { typing: false }).catch(() => {});
    }
    try {
      // echo: our own message comes back through the stream, in its place among the others.
      await chat.client.publish(roomTopic(), 'message', { text }, { echo: true });
    } catch (error) {
      input.value ||= text;
      showError(error);
    }
  });
}

function setUpRooms() {
  $('new-room').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('new-room-name').value.trim();
    $('new-room-name').value = '';
    if (name) joinRoom(name);
  });
}

function renderRooms() {
  $('rooms').replaceChildren(
    ...chat.rooms.map((room) => {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `# ${room}`;
      button.className = room === chat.room ? 'active' : '';
      button.onclick = () => joinRoom(room);
      item.append(button);
      return item;
    }),
  );
}

async function refreshPresence() {
  const room = chat.room;
  const reply = await chat.client.presence(roomTopic(room)).catch(showError);
  if (!reply || room !== chat.room) return;
  chat.online = new Set(reply.users.map((u) => u.user_id));
  renderOnline();
}

function renderOnline() {
  const names = [...chat.online].sort();
  $('online-count').textContent = String(names.length);
  $('online').replaceChildren(
    ...names.map((name) => {
      const item = document.createElement('li');
      item.dataset.user = name;
      const dot = document.createElement('span');
      dot.className = 'presence-dot';
      item.append(dot, name === chat.me ? `${name} (you)` : name);
      return item;
    }),
  );
}

// ---- notices ---------------------------------------------------------------------------

let noticeTimer;
function notice(text, onClick) {
  const element = $('notice');
  element.textContent = text;
  element.hidden = false;
  element.onclick = onClick ?? null;
  element.classList.toggle('action', Boolean(onClick));
  clearTimeout(noticeTimer);
  if (!onClick) noticeTimer = setTimeout(() => (element.hidden = true), 6_000);
}

function showError(error) {
  notice(error?.code ? `${error.code}: ${error.details}` : String(error?.message ?? error));
}

// Last, once every binding above is initialised (a sign-in by ?token= reaches them at once).
start();
