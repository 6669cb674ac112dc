// chatd's web client: one self-contained module, no framework, no build.
//
// It speaks chatd's JSON mode over a WebSocket on the page's own origin
// (/ws), one JSON object per text frame. Everything a user typed reaches
// the page only through textContent, never as HTML.
//
// Resuming without gaps: per room the client keeps the highest `seq` it
// has seen and the `epoch` of connect_ack; a reconnect sends them as
// `since`/`epoch`, so the history that follows holds exactly what was
// missed. Messages are deduplicated by seq anyway. The server does not echo
// a sender's own messages, so they are shown at once without a seq; when a
// resumed history brings one back (with its seq), the local line takes the
// seq instead of appearing twice.

const STORAGE_KEY = 'chatd.session';
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PAGE = 50;            // messages per "load older" page
const GAP_PAGE = 1000;      // messages per page when filling a gap
const GAP_ROUNDS = 20;      // at most this many pages to fill one gap
const ROOMS_EVERY_MS = 20000;
const SILENCE_MS = 50000;   // nothing heard for this long (rooms are asked every 20 s): reconnect

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

/** Control characters are removed by the server; the local echo does too. */
function stripControls(s) {
  // C0 but TAB, DEL, and C1.
  return s.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, '');
}

const key = (name) => String(name).toLowerCase();

/** Creates an element with a class and text (never HTML). */
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function nowIso() {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** HH:MM in local time, for the screen. */
function shortTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** YYYY-MM-DD HH:MM in UTC, as chatd's text mode writes history. */
function transcriptTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '????-??-?? ??:??';
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

function validName(name) {
  return /^[A-Za-z0-9_-]{1,32}$/.test(name);
}

// ---------------------------------------------------------------- state

/** A conversation's lines: a room's or a direct conversation's. */
class Log {
  constructor(kind, name) {
    this.kind = kind;       // 'room' | 'dm'
    this.name = name;       // room name or peer name, as last seen
    this.items = [];        // {kind:'msg'|'notice', sender, text, ts, seq?, mine?, candidate?, failed?, el?}
    this.seqs = new Set();  // every seq ever held (kept across a clear)
    this.lastSeq = null;    // highest seq seen (seqs start at 0)
    this.oldestSeq = null;  // lowest seq seen (kept across a clear)
    this.reachedStart = false;
    this.unread = 0;
  }
}

const S = {
  ws: null,
  wanted: false,        // the user wants to be connected
  auto: false,          // retry on failure (a session that worked, or one from storage)
  connected: false,     // connect_ack received on this socket
  attempt: 0,
  timer: null,
  name: '',
  password: null,       // in memory only, until a token replaces it
  token: null,
  registered: false,
  room: 'lobby',
  topic: '',
  epoch: null,
  myNames: new Set(),
  rooms: new Map(),     // key -> Log
  dms: new Map(),       // key -> Log
  view: { kind: 'room' },
  nextId: 1,
  pending: new Map(),   // request id -> what it was
  outbox: [],           // user requests made while disconnected
  entering: null,       // {room, resumeFrom} until the entering history arrives
  whoScope: 'room',
  whoTimer: null,
  roomsTimer: null,
  connectId: null,
  takenTries: 0,        // name_taken answers in a row while reconnecting
  signingOut: null,     // timer while waiting for the logout answer
  status: 'online',
  note: '',
  lastHeard: 0,         // when the socket last brought something
};

function roomLog(name) {
  const k = key(name);
  let log = S.rooms.get(k);
  if (!log) {
    log = new Log('room', name);
    S.rooms.set(k, log);
  }
  log.name = name;
  return log;
}

function dmLog(peer) {
  const k = key(peer);
  let log = S.dms.get(k);
  if (!log) {
    log = new Log('dm', peer);
    S.dms.set(k, log);
  }
  log.name = peer;
  return log;
}

function currentLog() {
  return S.view.kind === 'dm' ? dmLog(S.view.peer) : roomLog(S.room);
}

function isMe(name) {
  return name != null && S.myNames.has(key(name));
}

// ---------------------------------------------------------------- storage

function loadSession() {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const s = JSON.parse(raw);
    return s && typeof s.name === 'string' && validName(s.name) ? s : null;
  } catch {
    return null;
  }
}

function saveSession() {
  try {
    const s = { name: S.name, room: S.room };
    if (S.token) s.token = S.token;
    localStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  } catch {
    // Storage may be full or disabled; the session then lasts this page.
  }
}

function clearSession() {
  try {
    localStorage.removeItem(STORAGE_KEY);
  } catch {
    // nothing to do
  }
}

// ---------------------------------------------------------------- connection

function wsUrl() {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function setConn(state, text) {
  const e = $('conn-state');
  e.dataset.state = state;
  e.textContent = text || state;
  document.body.dataset.conn = state;
}

function openSocket() {
  clearTimeout(S.timer);
  S.timer = null;
  if (S.ws) return;
  if (S.attempt > 0) setConn('reconnecting', 'reconnecting…');
  else setConn('connecting', 'connecting…');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  S.ws = ws;
  S.connected = false;
  ws.addEventListener('open', () => {
    if (S.ws !== ws) return;
    sendConnect();
  });
  ws.addEventListener('message', (e) => {
    if (S.ws !== ws || typeof e.data !== 'string') return;
    S.lastHeard = Date.now();
    let obj;
    try {
      obj = JSON.parse(e.data);
    } catch {
      return;
    }
    if (obj && typeof obj === 'object') handle(obj);
  });
  ws.addEventListener('close', () => {
    if (S.ws !== ws) return;
    S.ws = null;
    const wasConnected = S.connected;
    S.connected = false;
    S.entering = null;
    clearInterval(S.roomsTimer);
    if (S.signingOut) {
      finishSignOut();
      return;
    }
    if (!S.wanted) {
      setConn('disconnected', 'signed out');
      return;
    }
    if (!wasConnected && !S.auto) {
      // A first sign-in that did not get through.
      S.wanted = false;
      setConn('disconnected', 'not connected');
      signinError('Cannot reach the chat server. Try again in a moment.');
      return;
    }
    if (wasConnected) notice(roomLog(S.room), 'Connection lost; reconnecting…');
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  clearTimeout(S.timer);
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(S.attempt, 10));
  const wait = Math.round(base * (0.8 + 0.4 * Math.random()));
  S.attempt += 1;
  setConn('reconnecting', `reconnecting in ${Math.max(1, Math.round(wait / 1000))} s…`);
  S.timer = setTimeout(openSocket, wait);
}

function closeSocket() {
  clearTimeout(S.timer);
  S.timer = null;
  clearInterval(S.roomsTimer);
  const ws = S.ws;
  S.ws = null;
  S.connected = false;
  if (ws) {
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
  }
}

/** Sends a request now; returns its id, or null if the socket is not open. */
function send(type, payload, meta) {
  const ws = S.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return null;
  const id = String(S.nextId++);
  const obj = { type, id };
  if (payload) obj.payload = payload;
  if (meta) {
    S.pending.set(id, meta);
    if (S.pending.size > 500) S.pending.delete(S.pending.keys().next().value);
  }
  ws.send(JSON.stringify(obj));
  if (meta && meta.item) {
    // Sent: a later resumed history may bring it back with its seq.
    meta.item.queued = false;
    meta.item.candidate = meta.kind === 'message';
    if (meta.item.el) meta.item.el.classList.remove('queued');
  }
  return id;
}

/** A request the user made: sent now, or once connected again. */
function sendOrQueue(type, payload, meta) {
  if (S.connected && send(type, payload, meta) !== null) return;
  if (meta && meta.item) {
    meta.item.queued = true;
    if (meta.item.el) meta.item.el.classList.add('queued');
  }
  S.outbox.push({ type, payload, meta });
}

function flushOutbox() {
  const queued = S.outbox;
  S.outbox = [];
  for (const q of queued) {
    if (send(q.type, q.payload, q.meta) === null) S.outbox.push(q);
  }
}

function sendConnect() {
  const payload = { name: S.name, room: S.room };
  if (S.token) payload.token = S.token;
  else if (S.password) payload.password = S.password;
  const log = S.rooms.get(key(S.room));
  let resumeFrom = null;
  if (log && S.epoch && log.lastSeq !== null) {
    payload.since = log.lastSeq;
    payload.epoch = S.epoch;
    resumeFrom = log.lastSeq;
  }
  S.connectId = send('connect', payload, {
    kind: 'connect',
    usedToken: Boolean(S.token),
    usedPassword: !S.token && Boolean(S.password),
    resumeFrom,
  });
}

// ---------------------------------------------------------------- events

function handle(obj) {
  const p = obj.payload && typeof obj.payload === 'object' ? obj.payload : {};
  const id = obj.id === undefined || obj.id === null ? null : String(obj.id);
  const meta = id !== null ? S.pending.get(id) : undefined;
  switch (obj.type) {
    case 'connect_ack': onConnectAck(p, meta); break;
    case 'history': onHistory(p, meta, id); break;
    case 'message': onMessage(p); break;
    case 'direct': onDirect(p); break;
    case 'notification': onNotification(p, meta); break;
    case 'who': if (S.whoScope === 'room') renderWho(p.users, false); break;
    case 'users': if (S.whoScope === 'all') renderWho(p.users, true); break;
    case 'rooms': renderRooms(p.rooms); break;
    case 'error': onError(p, meta, id); break;
    case 'topic':
      notice(roomLog(S.room), p.topic ? `Topic of #${p.room}: ${p.topic}` : `#${p.room} has no topic`);
      break;
    case 'whois': onWhois(p); break;
    case 'bans':
      notice(currentLog(), `Bans: ${(p.bans || []).map((b) => b.target).join(', ') || 'none'}`);
      break;
    default:
      break;
  }
  // A connect or join is answered twice (ack or notification, then history).
  if (id !== null && meta && (obj.type === 'history' || obj.type === 'error' ||
      (meta.kind !== 'connect' && meta.kind !== 'join'))) {
    S.pending.delete(id);
  }
}

function onConnectAck(p, meta) {
  S.connected = true;
  S.auto = true;
  S.attempt = 0;
  S.takenTries = 0;
  S.name = p.name || S.name;
  S.myNames.add(key(S.name));
  // Registered users (password or token login) always get a token.
  S.registered = Boolean(p.token);
  if (p.token) {
    S.token = p.token;
    S.password = null;
  }
  if (p.epoch) {
    if (S.epoch && S.epoch !== p.epoch) {
      // Another history lineage: the seqs we hold mean nothing now.
      for (const log of S.rooms.values()) {
        log.items = [];
        log.seqs.clear();
        log.lastSeq = null;
        log.oldestSeq = null;
        log.reachedStart = false;
      }
      notice(roomLog(p.room || S.room), 'The server\u2019s history was reset.');
    }
    S.epoch = p.epoch;
  }
  const resumeFrom = meta && meta.resumeFrom != null && S.rooms.get(key(p.room || S.room)) &&
    S.rooms.get(key(p.room || S.room)).lastSeq !== null ? meta.resumeFrom : null;
  enterRoom(p.room || S.room, p.topic, resumeFrom);
  saveSession();
  setConn('connected', 'connected');
  showChat();
  signinError('');
  refreshAccount();
  if (S.status !== 'online' || S.note) setStatus(S.status, S.note);
  requestWho();
  send('rooms', null, null);
  clearInterval(S.roomsTimer);
  S.roomsTimer = setInterval(poll, ROOMS_EVERY_MS);
}

/** Keeps the room sizes fresh, and notices a connection that died silently. */
function poll() {
  if (S.connected && Date.now() - S.lastHeard > SILENCE_MS) {
    const ws = S.ws;
    S.ws = null;
    S.connected = false;
    S.entering = null;
    clearInterval(S.roomsTimer);
    try {
      ws.close();
    } catch {
      // it is gone anyway
    }
    notice(roomLog(S.room), 'The connection went silent; reconnecting…');
    scheduleReconnect();
    return;
  }
  send('rooms', null, null);
}

/** The user is now in `room`: its history comes next. */
function enterRoom(room, topic, resumeFrom) {
  const changed = key(room) !== key(S.room);
  S.room = room;
  S.topic = topic || '';
  roomLog(room);
  S.entering = { room, resumeFrom };
  if (changed || S.view.kind === 'room') S.view = { kind: 'room' };
  renderView();
  renderTopic();
}

function onHistory(p, meta) {
  const messages = Array.isArray(p.messages) ? p.messages : [];
  const room = p.room || S.room;
  const log = roomLog(room);
  if (meta && meta.kind === 'older') {
    if (key(room) !== key(meta.room)) return;
    if (messages.length === 0) log.reachedStart = true;
    mergeRoomMessages(log, messages, { keepScroll: true });
    renderOlderButton();
    return;
  }
  if (meta && meta.kind === 'gap') {
    if (key(room) !== key(meta.room)) return;
    mergeRoomMessages(log, messages, {});
    const first = messages.length ? messages[0].seq : null;
    if (first != null && first > meta.since + 1 && meta.round < GAP_ROUNDS) {
      fillGap(log, meta.since, first, meta.round + 1);
    }
    return;
  }
  // The history that comes with entering a room (connect, join, kick).
  const entering = S.entering;
  S.entering = null;
  const wasEmpty = log.items.length === 0;
  const had = log.lastSeq;
  mergeRoomMessages(log, messages, { reconcile: true });
  // Own lines sent before this entry that did not come back are settled:
  // they cannot be matched by a later history.
  for (const it of log.items) if (it.candidate) it.candidate = false;
  // A history after `since` is exact unless truncated. Otherwise (more
  // was missed than one history holds, or the room was entered without
  // `since`, as by a kick) page back to what we had: no gap.
  const exact = entering && entering.resumeFrom != null && !p.truncated;
  const first = messages.length > 0 ? messages[0].seq : null;
  if (!exact && had !== null && typeof first === 'number' && first > had + 1) {
    fillGap(log, had, first, 1);
  }
  if (messages.length === 0 && log.lastSeq === null) log.reachedStart = true;
  renderOlderButton();
  flushOutbox();
  scrollToEnd(wasEmpty);
}

function fillGap(log, since, before, round) {
  send('history', { before, count: GAP_PAGE }, { kind: 'gap', room: log.name, since, round });
}

function onMessage(p) {
  const room = p.room || S.room;
  const log = roomLog(room);
  const item = { kind: 'msg', sender: String(p.sender || ''), text: String(p.text || ''), ts: p.ts || nowIso() };
  if (typeof p.seq === 'number') item.seq = p.seq;
  const added = addItem(log, item);
  if (added && S.view.kind !== 'room') {
    log.unread += 1;
    renderRoomUnread();
  }
}

function onDirect(p) {
  const sender = String(p.sender || '');
  const log = dmLog(sender);
  const item = { kind: 'msg', sender, text: String(p.text || ''), ts: p.ts || nowIso() };
  addItem(log, item);
  const viewing = S.view.kind === 'dm' && key(S.view.peer) === key(sender);
  if (!viewing) log.unread += 1;
  renderDms();
  updateTitle();
  if (!viewing || document.visibilityState !== 'visible') desktopNotify(sender, item.text);
}

function onNotification(p, meta) {
  const ev = p.event;
  const name = p.name;
  const room = p.room;
  const here = roomLog(room || S.room);
  const text = typeof p.message === 'string' ? p.message : '';
  switch (ev) {
    case 'join':
      if (isMe(name)) {
        if (key(room) !== key(S.room) || S.entering === null) {
          // `since` went with our own join request; not with a kick.
          const resumeFrom = meta && meta.kind === 'join' && meta.since != null ? meta.since : null;
          const already = key(room) === key(S.room);
          enterRoom(room, p.topic, already ? null : resumeFrom);
          if (already) {
            S.entering = null;
            showView({ kind: 'room' });
          } else {
            notice(roomLog(room), `You joined #${room}`);
            saveSession();
          }
          requestWho();
          send('rooms', null, null);
        }
      } else if (key(room || '') === key(S.room)) {
        notice(here, `${name} joined #${room}`);
        requestWho();
      }
      break;
    case 'leave':
      if (!isMe(name)) notice(here, `${name} left #${room}`);
      requestWho();
      break;
    case 'quit':
      if (!isMe(name)) notice(here, `${name} quit${p.reason ? ` (${p.reason})` : ''}`);
      requestWho();
      break;
    case 'disconnect':
      if (isMe(name)) {
        // Logged in from another connection: do not fight over the name.
        S.wanted = false;
        S.auto = false;
        closeSocket();
        setConn('disconnected', 'not connected');
        showSignin('You signed in from another place, so this page was disconnected.');
        $('signin-name').value = S.name;
      } else {
        notice(here, `${name} disconnected${p.reason ? ` (${p.reason})` : ''}`);
      }
      requestWho();
      break;
    case 'nick':
      if (isMe(p.old)) {
        S.name = name;
        S.myNames.add(key(name));
        $('me-name').textContent = name;
        saveSession();
        notice(here, `You are now known as ${name}`);
      } else {
        notice(here, `${p.old} is now known as ${name}`);
      }
      requestWho();
      break;
    case 'status':
      if (isMe(name)) {
        S.status = p.status || 'online';
        S.note = p.note || '';
        $('status-select').value = S.status;
        $('status-note').value = S.note;
        notice(here, `You are now ${p.status}${p.note ? ` (${p.note})` : ''}`);
      } else {
        notice(here, `${name} is now ${p.status}${p.note ? ` (${p.note})` : ''}`);
      }
      requestWho();
      break;
    case 'register':
      S.registered = true;
      if (p.token) S.token = p.token;
      saveSession();
      refreshAccount();
      $('register-password').value = '';
      notice(currentLog(), `${name || S.name} is now registered.`);
      break;
    case 'passwd':
      // A new password ends the tokens; the next connect uses the new one.
      S.token = null;
      saveSession();
      notice(currentLog(), 'Password changed.');
      break;
    case 'logout':
      if (S.signingOut) finishSignOut();
      break;
    case 'shutdown':
      notice(roomLog(S.room), 'The server is shutting down.');
      break;
    case 'topic':
      if (key(room || '') === key(S.room)) {
        S.topic = p.topic || '';
        renderTopic();
      }
      notice(roomLog(room || S.room), text || `Topic: ${p.topic}`);
      break;
    case 'wall':
      notice(roomLog(S.room), `Announcement from ${p.by}: ${text}`);
      break;
    default:
      notice(roomLog(S.room), text || `${ev}: ${name || ''}`);
      if (ev === 'kick' || ev === 'ban' || ev === 'mute' || ev === 'unmute' || ev === 'role') requestWho();
  }
}

function onError(p, meta, id) {
  const code = String(p.code || 'error');
  const message = String(p.message || code);
  if ((meta && meta.kind === 'connect') || (!S.connected && id === S.connectId)) {
    onConnectError(code, message, meta || {});
    return;
  }
  if (meta && (meta.kind === 'message' || meta.kind === 'direct') && meta.item) {
    meta.item.failed = true;
    if (meta.item.el) meta.item.el.classList.add('failed');
    notice(meta.log, `Not sent: ${message}`);
    return;
  }
  if (meta && meta.kind === 'register') {
    $('register-error').textContent = message;
  }
  if (meta && meta.kind === 'passwd') {
    $('passwd-error').textContent = message;
  }
  notice(currentLog(), `Error: ${message}`);
}

function onConnectError(code, message, meta) {
  if (code === 'name_taken' && S.auto && S.takenTries < 6) {
    // The old connection of this page may not be gone yet: try again.
    S.takenTries += 1;
    closeSocket();
    scheduleReconnect();
    return;
  }
  if (code === 'server_busy' || code === 'too_many_connections') {
    closeSocket();
    if (S.auto) {
      scheduleReconnect();
      return;
    }
  }
  S.wanted = false;
  S.auto = false;
  closeSocket();
  let text = message;
  if (code === 'bad_password') {
    if (meta.usedToken) {
      S.token = null;
      text = 'Your session has ended. Enter your password to sign in again.';
    } else if (meta.usedPassword) {
      text = 'Wrong password.';
    } else {
      text = 'This name is registered: enter its password.';
    }
  } else if (code === 'name_taken') {
    text = 'That name is taken; choose another.';
  } else if (code === 'name_invalid') {
    text = 'A name is 1 to 32 letters, digits, _ or -.';
  }
  S.password = null;
  clearSession();
  showSignin(text);
  $('signin-name').value = S.name;
  setConn('disconnected', 'not connected');
  (code === 'bad_password' ? $('signin-password') : $('signin-name')).focus();
}

function onWhois(p) {
  const parts = [`${p.name}: ${p.status}`];
  if (p.note) parts.push(`(${p.note})`);
  parts.push(p.room ? `in #${p.room}` : 'offline');
  parts.push(p.registered ? 'registered' : 'guest');
  if (p.role && p.role !== 'user') parts.push(p.role);
  notice(currentLog(), parts.join(' '));
}

// ---------------------------------------------------------------- lines

/** Adds a notice line (text only) to `log`. */
function notice(log, text) {
  addItem(log, { kind: 'notice', text: String(text), ts: nowIso() });
}

/**
 * Adds `item` to `log`, deduplicating and ordering by seq; returns whether
 * it was added. A seq'd line newer than all is appended; an older one goes
 * right after the last line with a smaller seq.
 */
function addItem(log, item, opts) {
  const seq = item.seq;
  if (typeof seq === 'number') {
    if (log.seqs.has(seq)) return false;
    log.seqs.add(seq);
    if (log.oldestSeq === null || seq < log.oldestSeq) log.oldestSeq = seq;
    if (log.lastSeq === null || seq > log.lastSeq) {
      log.lastSeq = seq;
      insertAt(log, log.items.length, item, opts);
      return true;
    }
    let i = log.items.length - 1;
    while (i >= 0 && !(typeof log.items[i].seq === 'number' && log.items[i].seq < seq)) i -= 1;
    insertAt(log, i + 1, item, opts);
    return true;
  }
  insertAt(log, log.items.length, item, opts);
  return true;
}

function mergeRoomMessages(log, messages, opts) {
  const list = $('message-list');
  const showing = isShowing(log);
  const atEnd = showing && nearEnd();
  const oldHeight = list.scrollHeight;
  const oldTop = list.scrollTop;
  for (const m of messages) {
    if (!m || typeof m.seq !== 'number') continue;
    if (log.seqs.has(m.seq)) continue;
    const sender = String(m.sender || '');
    const text = String(m.text || '');
    if (opts.reconcile && isMe(sender)) {
      const mine = log.items.find((it) => it.candidate && it.text === text);
      if (mine) {
        mine.candidate = false;
        mine.seq = m.seq;
        mine.ts = m.ts || mine.ts;
        log.seqs.add(m.seq);
        if (log.lastSeq === null || m.seq > log.lastSeq) log.lastSeq = m.seq;
        if (log.oldestSeq === null || m.seq < log.oldestSeq) log.oldestSeq = m.seq;
        if (mine.el) mine.el.dataset.seq = String(m.seq);
        continue;
      }
    }
    addItem(log, { kind: 'msg', sender, text, ts: m.ts || nowIso(), seq: m.seq }, { quiet: true });
  }
  if (showing) {
    if (opts.keepScroll) list.scrollTop = oldTop + (list.scrollHeight - oldHeight);
    else if (atEnd) scrollToEnd(true);
  }
}

function isShowing(log) {
  if (log.kind === 'room') return S.view.kind === 'room' && key(log.name) === key(S.room);
  return S.view.kind === 'dm' && key(S.view.peer) === key(log.name);
}

function insertAt(log, index, item, opts) {
  log.items.splice(index, 0, item);
  if (!isShowing(log)) return;
  const list = $('message-list');
  const atEnd = nearEnd();
  const node = renderItem(item);
  const next = log.items[index + 1];
  if (next && next.el && next.el.parentNode === list) list.insertBefore(node, next.el);
  else list.appendChild(node);
  if (!(opts && opts.quiet) && index === log.items.length - 1 && (atEnd || item.mine)) scrollToEnd(false);
}

function renderItem(item) {
  const li = el('li', item.kind === 'notice' ? 'notice' : 'msg');
  item.el = li;
  if (item.kind === 'notice') {
    li.dataset.testid = 'notice';
    li.textContent = item.text;
    return li;
  }
  li.dataset.testid = 'message';
  li.dataset.sender = item.sender;
  if (typeof item.seq === 'number') li.dataset.seq = String(item.seq);
  if (item.mine) li.classList.add('mine');
  if (item.queued) li.classList.add('queued');
  if (item.failed) li.classList.add('failed');
  const time = el('time', 'ts', shortTime(item.ts));
  time.dateTime = item.ts;
  time.title = item.ts;
  const who = el('span', 'sender', item.sender);
  who.dataset.testid = 'message-sender';
  const sep = el('span', 'sep', ': ');
  const text = el('span', 'text', item.text);
  text.dataset.testid = 'message-text';
  li.append(time, ' ', who, sep, text);
  return li;
}

function nearEnd() {
  const list = $('message-list');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function scrollToEnd(force) {
  const list = $('message-list');
  if (force || nearEnd()) list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- views

function showView(view) {
  S.view = view;
  const log = currentLog();
  log.unread = 0;
  renderView();
  renderDms();
  renderRoomUnread();
  updateTitle();
  closeMenu();
}

function renderView() {
  const list = $('message-list');
  const log = currentLog();
  list.setAttribute('aria-busy', 'true');
  list.replaceChildren(...log.items.map(renderItem));
  list.dataset.conversation = log.kind === 'room' ? `room:${log.name}` : `dm:${log.name}`;
  list.removeAttribute('aria-busy');
  const isRoom = log.kind === 'room';
  $('view-title').textContent = isRoom ? `#${log.name}` : `Direct messages with ${log.name}`;
  $('view-title').dataset.kind = log.kind;
  $('topic').hidden = !isRoom || !S.topic;
  $('back-to-room').hidden = isRoom;
  $('composer-input').placeholder = isRoom ? `Message #${log.name}` : `Message ${log.name}`;
  $('composer-label').textContent = isRoom ? `Message to #${log.name}` : `Direct message to ${log.name}`;
  $('message-list').setAttribute('aria-label',
    isRoom ? `Messages in #${log.name}` : `Direct messages with ${log.name}`);
  renderOlderButton();
  renderRooms(null);
  scrollToEnd(true);
}

function renderTopic() {
  const t = $('topic');
  t.textContent = S.topic ? `Topic: ${S.topic}` : '';
  t.hidden = S.view.kind !== 'room' || !S.topic;
}

function renderOlderButton() {
  const b = $('load-older');
  const log = currentLog();
  if (log.kind !== 'room') {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  b.disabled = log.reachedStart || log.oldestSeq === null;
  b.textContent = log.reachedStart ? 'Beginning of the history' : 'Load older messages';
}

function renderRoomUnread() {
  const badge = $('room-unread');
  const log = roomLog(S.room);
  badge.textContent = String(log.unread);
  badge.hidden = log.unread === 0;
}

let lastRooms = [];

function renderRooms(rooms) {
  if (Array.isArray(rooms)) lastRooms = rooms;
  const ul = $('room-list');
  const items = lastRooms.slice();
  if (S.room && !items.some((r) => key(r.name) === key(S.room))) items.push({ name: S.room, users: 1 });
  items.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  ul.replaceChildren(...items.map((r) => {
    const li = el('li', 'room');
    li.dataset.testid = 'room-entry';
    li.dataset.room = r.name;
    const b = el('button', 'entry');
    b.type = 'button';
    const current = key(r.name) === key(S.room);
    if (current) b.setAttribute('aria-current', 'true');
    const count = el('span', 'count', r.users);
    count.dataset.testid = 'room-size';
    b.append(el('span', 'entry-name', `#${r.name}`), count);
    b.setAttribute('aria-label', `#${r.name}, ${r.users} ${r.users === 1 ? 'person' : 'people'}` +
      (current ? ', your room' : ''));
    b.addEventListener('click', () => {
      if (key(r.name) === key(S.room)) showView({ kind: 'room' });
      else joinRoom(r.name);
    });
    li.append(b);
    return li;
  }));
}

function renderWho(users, everyone) {
  const ul = $('who-list');
  const list = Array.isArray(users) ? users.slice() : [];
  const order = { online: 0, away: 1, busy: 2, offline: 3 };
  list.sort((a, b) => (order[a.status] ?? 4) - (order[b.status] ?? 4) ||
    String(a.name).localeCompare(String(b.name)));
  ul.replaceChildren(...list.map((u) => {
    const li = el('li', 'who');
    li.dataset.testid = 'who-entry';
    li.dataset.name = u.name;
    li.dataset.status = u.status;
    const dot = el('span', `dot status-${u.status}`);
    dot.setAttribute('aria-hidden', 'true');
    const me = isMe(u.name);
    const label = `${u.name}${me ? ' (you)' : ''}`;
    let nameNode;
    if (me) {
      nameNode = el('span', 'who-name', label);
    } else {
      nameNode = el('button', 'who-name entry', label);
      nameNode.type = 'button';
      nameNode.setAttribute('aria-label', `Write to ${u.name}, ${u.status}${u.note ? `: ${u.note}` : ''}`);
      nameNode.addEventListener('click', () => openDm(u.name));
    }
    const status = el('span', 'who-status', u.status);
    status.dataset.testid = 'who-status';
    li.append(dot, nameNode, status);
    if (u.role && u.role !== 'user') li.append(el('span', 'who-role', u.role));
    if (u.note) {
      const note = el('span', 'who-note', u.note);
      note.dataset.testid = 'who-note';
      li.append(note);
    }
    return li;
  }));
  ul.dataset.scope = everyone ? 'all' : 'room';
}

function renderDms() {
  const ul = $('dm-list');
  const logs = [...S.dms.values()];
  ul.replaceChildren(...logs.map((log) => {
    const li = el('li', 'dm');
    li.dataset.testid = 'dm-entry';
    li.dataset.peer = log.name;
    const b = el('button', 'entry');
    b.type = 'button';
    const viewing = S.view.kind === 'dm' && key(S.view.peer) === key(log.name);
    if (viewing) b.setAttribute('aria-current', 'true');
    const badge = el('span', 'badge', log.unread);
    badge.dataset.testid = 'dm-unread';
    badge.hidden = log.unread === 0;
    b.append(el('span', 'entry-name', log.name), badge);
    b.setAttribute('aria-label', `Conversation with ${log.name}` +
      (log.unread ? `, ${log.unread} unread` : ''));
    b.addEventListener('click', () => openDm(log.name));
    li.append(b);
    return li;
  }));
}

function updateTitle() {
  let unread = 0;
  for (const log of S.dms.values()) unread += log.unread;
  document.title = unread ? `(${unread}) chatd` : 'chatd';
  const badge = $('menu-unread');
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
  $('menu-toggle').setAttribute('aria-label',
    unread ? `Menu, ${unread} unread direct ${unread === 1 ? 'message' : 'messages'}` : 'Menu');
}

function refreshAccount() {
  $('me-name').textContent = S.name;
  $('me-guest').textContent = S.registered ? 'registered' : 'guest';
  $('register-form').hidden = S.registered;
  $('passwd-form').hidden = !S.registered;
}

function showChat() {
  $('signin-view').hidden = true;
  $('chat-view').hidden = false;
  $('me-box').hidden = false;
  $('sign-out').hidden = false;
  $('menu-toggle').hidden = false;
  $('signin-button').disabled = false;
  refreshAccount();
  renderNotifyButton();
}

function showSignin(error) {
  $('chat-view').hidden = true;
  $('signin-view').hidden = false;
  $('me-box').hidden = true;
  $('sign-out').hidden = true;
  $('menu-toggle').hidden = true;
  $('signin-button').disabled = false;
  closeMenu();
  signinError(error || '');
}

function signinError(text) {
  $('signin-error').textContent = text;
  $('signin-button').disabled = false;
}

function closeMenu() {
  document.body.classList.remove('menu-open');
  $('menu-toggle').setAttribute('aria-expanded', 'false');
}

/** Asks again for the people list and the room sizes (coalesced). */
function requestWho() {
  clearTimeout(S.whoTimer);
  S.whoTimer = setTimeout(() => {
    send(S.whoScope === 'all' ? 'users' : 'who', null, null);
    send('rooms', null, null);
  }, 100);
}

// ---------------------------------------------------------------- actions

function joinRoom(name) {
  const room = name.replace(/^#/, '').trim();
  if (!validName(room)) {
    notice(currentLog(), 'A room name is 1 to 32 letters, digits, _ or -.');
    return;
  }
  if (key(room) === key(S.room)) {
    showView({ kind: 'room' });
    return;
  }
  const payload = { room };
  const log = S.rooms.get(key(room));
  if (log && S.epoch && log.lastSeq !== null) {
    payload.since = log.lastSeq;
    payload.epoch = S.epoch;
  }
  if (send('join', payload, { kind: 'join', room, since: payload.since ?? null }) === null) {
    notice(currentLog(), 'Not connected: try again once connected.');
  }
  closeMenu();
}

function openDm(peer) {
  const name = peer.replace(/^@/, '').trim();
  if (!validName(name)) {
    notice(currentLog(), 'A name is 1 to 32 letters, digits, _ or -.');
    return;
  }
  dmLog(name);
  showView({ kind: 'dm', peer: name });
  $('composer-input').focus();
}

function sendRoomMessage(text) {
  const log = roomLog(S.room);
  const item = { kind: 'msg', sender: S.name, text: stripControls(text), ts: nowIso(), mine: true };
  addItem(log, item);
  sendOrQueue('message', { text }, { kind: 'message', item, log });
}

function sendDirect(peer, text) {
  const log = dmLog(peer);
  const item = { kind: 'msg', sender: S.name, text: stripControls(text), ts: nowIso(), mine: true };
  addItem(log, item);
  renderDms();
  sendOrQueue('direct', { to: peer, text }, { kind: 'direct', item, log });
}

/** A line starting with `/` (but not `//`) is a command. */
function command(line) {
  const m = /^\/(\S+)\s*(.*)$/s.exec(line);
  if (!m) return;
  const word = m[1].toLowerCase();
  const rest = m[2];
  const log = currentLog();
  switch (word) {
    case 'join': if (rest) joinRoom(rest.split(/\s+/)[0]); break;
    case 'msg': {
      const mm = /^(\S+)\s+(.+)$/s.exec(rest);
      if (!mm) { notice(log, 'usage: /msg NAME TEXT'); break; }
      openDm(mm[1]);
      if (validName(mm[1].replace(/^@/, ''))) sendDirect(mm[1].replace(/^@/, ''), mm[2]);
      break;
    }
    case 'nick':
      if (rest) send('nick', { name: rest.trim() }, { kind: 'nick' });
      break;
    case 'away': case 'busy': case 'back': case 'online': {
      const status = word === 'back' ? 'online' : word;
      setStatus(status, rest.trim());
      break;
    }
    case 'topic': send('topic', rest.trim() ? { text: rest.trim() } : {}, { kind: 'topic' }); break;
    case 'whois': if (rest) send('whois', { name: rest.trim() }, { kind: 'whois' }); break;
    case 'who': showWhoScope('room'); break;
    case 'users': showWhoScope('all'); break;
    case 'rooms': send('rooms', null, null); break;
    case 'help':
      notice(log, 'Commands: /join ROOM, /msg NAME TEXT, /nick NAME, /away [NOTE], /busy [NOTE], ' +
        '/back, /topic [TEXT], /whois NAME, /who, /users, /rooms. //text sends /text.');
      break;
    default:
      notice(log, `Unknown command /${word}; /help lists them. Start with // to send a line that begins with /.`);
  }
}

function setStatus(status, note) {
  const payload = { status };
  payload.note = note ? note : null;
  send('status', payload, { kind: 'status' });
}

function showWhoScope(scope) {
  S.whoScope = scope;
  $('who-scope').value = scope;
  requestWho();
}

function signOut() {
  S.wanted = false;
  S.auto = false;
  if (S.connected && S.token && send('logout', null, { kind: 'logout' }) !== null) {
    // The server answers with a `logout` notification; then we leave.
    clearTimeout(S.signingOut);
    S.signingOut = setTimeout(finishSignOut, 2000);
    return;
  }
  finishSignOut();
}

function finishSignOut() {
  clearTimeout(S.signingOut);
  S.signingOut = null;
  S.wanted = false;
  S.auto = false;
  if (S.connected) send('quit', { reason: 'signed out' }, null);
  closeSocket();
  clearSession();
  S.token = null;
  S.password = null;
  S.registered = false;
  S.rooms.clear();
  S.dms.clear();
  S.myNames.clear();
  S.outbox = [];
  S.epoch = null;
  S.view = { kind: 'room' };
  S.room = 'lobby';
  S.status = 'online';
  S.note = '';
  $('status-select').value = 'online';
  $('status-note').value = '';
  lastRooms = [];
  $('message-list').replaceChildren();
  $('who-list').replaceChildren();
  $('dm-list').replaceChildren();
  $('room-list').replaceChildren();
  updateTitle();
  setConn('disconnected', 'signed out');
  showSignin('');
  $('signin-name').value = S.name;
  $('signin-password').value = '';
  $('signin-name').focus();
}

function startSession(name, password, room, auto, token) {
  S.name = name;
  S.myNames = new Set([key(name)]);
  S.password = password || null;
  S.token = token || null;
  S.registered = Boolean(token);
  S.room = room || 'lobby';
  S.wanted = true;
  S.auto = auto;
  S.attempt = 0;
  S.takenTries = 0;
  S.outbox = [];
  S.epoch = null;
  S.rooms.clear();
  S.dms.clear();
  S.view = { kind: 'room' };
  openSocket();
}

function saveTranscript() {
  const log = currentLog();
  const lines = log.items.map((it) => (it.kind === 'notice'
    ? `* ${it.text}`
    : `[${transcriptTime(it.ts)}] <${it.sender}> ${it.text}`));
  const blob = new Blob([lines.join('\n') + (lines.length ? '\n' : '')], { type: 'text/plain;charset=utf-8' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  const stamp = transcriptTime(nowIso()).replace(/[ :]/g, '-');
  a.download = `chatd-${log.kind === 'room' ? log.name : `dm-${log.name}`}-${stamp}.txt`;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function clearView() {
  const log = currentLog();
  for (const it of log.items) it.el = null;
  log.items = [];
  renderView();
}

function loadOlder() {
  const log = currentLog();
  if (log.kind !== 'room' || log.oldestSeq === null || log.reachedStart) return;
  send('history', { before: log.oldestSeq, count: PAGE }, { kind: 'older', room: log.name });
}

function renderNotifyButton() {
  const b = $('notify-enable');
  if (!('Notification' in window)) {
    b.hidden = true;
    return;
  }
  b.hidden = Notification.permission === 'granted';
  b.disabled = Notification.permission === 'denied';
  if (Notification.permission === 'denied') b.textContent = 'Desktop notifications are blocked';
}

function desktopNotify(sender, text) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  try {
    const n = new Notification(`Direct message from ${sender}`, { body: text, tag: `chatd-dm-${key(sender)}` });
    n.addEventListener('click', () => {
      window.focus();
      openDm(sender);
      n.close();
    });
  } catch {
    // Some browsers only allow notifications from a service worker.
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('signin-name').value.trim();
    const password = $('signin-password').value;
    const room = $('signin-room').value.trim().replace(/^#/, '');
    if (!validName(name)) {
      signinError('A name is 1 to 32 letters, digits, _ or -.');
      $('signin-name').focus();
      return;
    }
    if (room && !validName(room)) {
      signinError('A room name is 1 to 32 letters, digits, _ or -.');
      $('signin-room').focus();
      return;
    }
    signinError('');
    $('signin-button').disabled = true;
    $('signin-password').value = '';
    startSession(name, password, room || 'lobby', false, null);
  });

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('composer-input');
    const text = input.value;
    if (!text.trim()) return;
    input.value = '';
    if (text.startsWith('/') && !text.startsWith('//')) {
      command(text);
      return;
    }
    const body = text.startsWith('//') ? text.slice(1) : text;
    if (S.view.kind === 'dm') sendDirect(S.view.peer, body);
    else sendRoomMessage(body);
  });

  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const room = $('join-room').value.trim();
    if (!room) return;
    $('join-room').value = '';
    joinRoom(room);
  });

  $('dm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const to = $('dm-to').value.trim();
    if (!to) return;
    $('dm-to').value = '';
    openDm(to);
  });

  $('status-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setStatus($('status-select').value, $('status-note').value.trim());
  });

  $('register-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const password = $('register-password').value;
    $('register-error').textContent = '';
    if (password.length < 8) {
      $('register-error').textContent = 'A password has at least 8 characters.';
      return;
    }
    if (send('register', { password }, { kind: 'register' }) === null) {
      $('register-error').textContent = 'Not connected.';
    }
  });

  $('passwd-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const old = $('passwd-old').value;
    const neu = $('passwd-new').value;
    $('passwd-error').textContent = '';
    if (neu.length < 8) {
      $('passwd-error').textContent = 'A password has at least 8 characters.';
      return;
    }
    if (send('passwd', { old, new: neu }, { kind: 'passwd' }) !== null) {
      // Kept in memory only: a password change ends the session tokens, so
      // a reconnect before the next sign-in needs it.
      S.password = neu;
      $('passwd-old').value = '';
      $('passwd-new').value = '';
    }
  });

  $('who-scope').addEventListener('change', () => showWhoScope($('who-scope').value));
  $('rooms-refresh').addEventListener('click', () => send('rooms', null, null));
  $('sign-out').addEventListener('click', signOut);
  $('back-to-room').addEventListener('click', () => showView({ kind: 'room' }));
  $('save-transcript').addEventListener('click', saveTranscript);
  $('clear-view').addEventListener('click', clearView);
  $('load-older').addEventListener('click', loadOlder);
  $('notify-enable').addEventListener('click', () => {
    if (!('Notification' in window)) return;
    Notification.requestPermission().then(renderNotifyButton, renderNotifyButton);
  });
  $('menu-toggle').addEventListener('click', () => {
    const open = !document.body.classList.contains('menu-open');
    document.body.classList.toggle('menu-open', open);
    $('menu-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('rooms-refresh').focus();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('menu-open')) {
      closeMenu();
      $('menu-toggle').focus();
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && S.view.kind === 'dm') {
      dmLog(S.view.peer).unread = 0;
      renderDms();
      updateTitle();
    }
  });
  window.addEventListener('online', () => {
    if (S.wanted && !S.ws) {
      S.attempt = 0;
      openSocket();
    }
  });
  window.addEventListener('pagehide', () => {
    // Leave cleanly, so the name is free at once for the next page.
    if (S.ws && S.ws.readyState === WebSocket.OPEN) {
      try {
        S.ws.close(1000);
      } catch {
        // closing anyway
      }
    }
  });
}

function addErrorSlots() {
  // Error lines under the account forms (role=alert, text only).
  for (const [form, id] of [['register-form', 'register-error'], ['passwd-form', 'passwd-error']]) {
    const p = el('p', 'error');
    p.id = id;
    p.dataset.testid = id;
    p.setAttribute('role', 'alert');
    $(form).append(p);
  }
}

function main() {
  addErrorSlots();
  wire();
  renderNotifyButton();
  const saved = loadSession();
  if (saved) {
    $('signin-name').value = saved.name;
    showChat();
    startSession(saved.name, null, saved.room && validName(saved.room) ? saved.room : 'lobby', true,
      typeof saved.token === 'string' ? saved.token : null);
  } else {
    showSignin('');
    setConn('disconnected', 'signed out');
    $('signin-name').focus();
  }
}

main();
