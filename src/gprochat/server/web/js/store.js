// Conversations, kept in this browser's IndexedDB, safe with several tabs open.
//
// Database "gprochat", object store "conversations", one record per conversation:
// {id, title, system, model?, temperature?, updated, messages: [{id, role: "user"|"assistant",
// content, images?, status?, failure?}]}. `model` is the one the person chose for it
// (models.js), `temperature` its sampling temperature (settings.js); absent, the
// server's defaults. A user message's images are
// [{type, data, size, name}], data being the bytes as base64, as sent
// (attachments.js). An assistant message's status is "stopped" (the person pressed
// Stop) or "incomplete" (the answer broke off, or is still arriving); a finished one
// has none; one retried has `versions` and `version` (versions.js); a user message
// edited, `branches` and `branch` (editing.js). A user message the server refused carries `failure` ({kind, title,
// message, retryAt}) and is not sent again until retried.
//
// Every change is one operation (a function of a record) applied twice: at once to
// this tab's copy, so the page shows it, and inside a readwrite transaction to the
// stored record as it is then, so that what other tabs wrote meanwhile is kept. No
// tab ever writes its whole copy over the store. A BroadcastChannel tells the other
// tabs which record changed; they read it again. Which conversation is open is the
// tab's own (sessionStorage). The page once kept everything under one localStorage
// key: the first load that finds it moves it over in one transaction, then drops it.

import { dataURL, imageLines } from "./attachments.js";
import { demoteHeadings } from "./headings.js";
import { plainLine } from "./text.js";

const DATABASE = "gprochat";
const RECORDS = "conversations";
const OLD_KEY = "gprochat:conversations:v1";
const CURRENT_KEY = "gprochat:current";
const UNSAVED_KEY = "gprochat:unsaved";
const PASSWORD_KEY = "gprochat:pass";

export function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export function newConversation() {
  return { id: newId(), title: "", system: "", messages: [], updated: Date.now() };
}

export function titleOf(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((message) => message.role === "user");
  if (!first) return "New chat";
  const line = plainLine(first.content.trim().split("\n")[0]) || (first.images?.length ? `Image: ${first.images[0].name}` : "");
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

function valid(conversation) {
  return conversation && typeof conversation.id === "string" && Array.isArray(conversation.messages);
}

/** Older records have messages without ids: give them some (in place). */
function normalise(conversation) {
  for (const message of conversation.messages) if (!message.id) message.id = newId();
  conversation.title ??= "";
  conversation.system ??= "";
  conversation.updated ??= 0;
  return conversation;
}

function oldConversations() {
  try {
    const data = JSON.parse(localStorage.getItem(OLD_KEY) || "null");
    if (data && Array.isArray(data.conversations)) {
      return { conversations: data.conversations.filter(valid).map(normalise), current: data.current };
    }
  } catch (_) {
    // Unreadable: nothing to move.
  }
  return { conversations: [], current: null };
}

function request(operation) {
  return new Promise((resolve, reject) => {
    operation.onsuccess = () => resolve(operation.result);
    operation.onerror = () => reject(operation.error);
  });
}

function done(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new Error("transaction aborted"));
  });
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(RECORDS, { keyPath: "id" });
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
    opening.onblocked = () => reject(new Error("another tab holds an older version of the page's database"));
  });
}

/**
 * Move what the old page kept in localStorage into the database, in one
 * transaction, then drop the old key. A conversation already stored is left as it
 * is (another tab moved it first). Returns the old page's open conversation.
 */
async function moveOldConversations(db) {
  let old = null;
  try {
    old = localStorage.getItem(OLD_KEY);
  } catch (_) {
    return null;
  }
  if (old === null) return null;
  const { conversations, current } = oldConversations();
  const transaction = db.transaction(RECORDS, "readwrite");
  const records = transaction.objectStore(RECORDS);
  for (const conversation of conversations) {
    const key = records.getKey(conversation.id);
    key.onsuccess = () => {
      if (key.result === undefined) records.add(conversation);
    };
  }
  await done(transaction);
  localStorage.removeItem(OLD_KEY); // committed in the database now
  return current;
}

export class Store {
  constructor() {
    this.byId = new Map();
    this.currentId = null;
    this.db = null;
    this.pending = new Map(); // id -> writes not yet committed
    this.removed = new Set(); // ids deleted in this tab
    this.onChange = () => {};
    this.channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("gprochat:conversations") : null;
    if (this.channel) this.channel.onmessage = (event) => this.changedElsewhere(event.data);
    this.ready = this.open();
  }

  async open() {
    let moved = null;
    try {
      this.db = await openDatabase();
      this.db.onversionchange = () => this.db.close();
      moved = await moveOldConversations(this.db);
      await this.restoreUnsaved();
      const records = this.db.transaction(RECORDS).objectStore(RECORDS);
      for (const conversation of await request(records.getAll())) {
        if (valid(conversation)) this.byId.set(conversation.id, normalise(conversation));
      }
    } catch (_) {
      // No IndexedDB (private mode in some browsers): the page works, unsaved.
      this.db = null;
      for (const conversation of oldConversations().conversations) this.byId.set(conversation.id, conversation);
    }
    let wanted = null;
    try {
      wanted = sessionStorage.getItem(CURRENT_KEY);
    } catch (_) {
      // Not remembered per tab.
    }
    if (!wanted && moved) wanted = moved;
    if (wanted && this.byId.has(wanted)) this.currentId = wanted;
    else if (this.ordered[0]) this.currentId = this.ordered[0].id;
    else this.create();
    this.rememberCurrent();
  }

  /**
   * Keep, synchronously, the records whose writes have not landed yet: called when
   * the page goes away, since the browser may drop a transaction still running then.
   */
  keepUnsaved() {
    const records = [...this.pending.keys()].map((id) => this.byId.get(id)).filter(Boolean);
    if (!records.length) return;
    try {
      localStorage.setItem(UNSAVED_KEY, JSON.stringify(records));
    } catch (_) {
      // Storage full: what the transactions saved is what is kept.
    }
  }

  /** Store what `keepUnsaved` kept (this tab's copy of those records was the newest). */
  async restoreUnsaved() {
    let records = [];
    try {
      records = JSON.parse(localStorage.getItem(UNSAVED_KEY) || "[]").filter(valid);
    } catch (_) {
      // Unreadable: nothing to restore.
    }
    if (!records.length) return;
    const transaction = this.db.transaction(RECORDS, "readwrite");
    for (const record of records) transaction.objectStore(RECORDS).put(normalise(record));
    await done(transaction);
    localStorage.removeItem(UNSAVED_KEY);
    for (const record of records) this.channel?.postMessage({ id: record.id });
  }

  get conversations() {
    return [...this.byId.values()];
  }

  get current() {
    return this.byId.get(this.currentId) || null;
  }

  get(id) {
    return this.byId.get(id) || null;
  }

  /** Conversations, most recently used first. */
  get ordered() {
    return this.conversations.sort((a, b) => b.updated - a.updated);
  }

  rememberCurrent() {
    try {
      sessionStorage.setItem(CURRENT_KEY, this.currentId);
    } catch (_) {
      // Not remembered per tab.
    }
  }

  /** A new, empty conversation, open in this tab; stored once it has something. */
  create() {
    const conversation = newConversation();
    this.byId.set(conversation.id, conversation);
    this.currentId = conversation.id;
    this.rememberCurrent();
    return conversation;
  }

  select(id) {
    if (!this.byId.has(id)) return;
    this.currentId = id;
    this.rememberCurrent();
  }

  /**
   * Change conversation `id` by `change(record)`: now in this tab, and in the
   * database on the stored record (or this tab's copy, if it is not stored yet).
   */
  update(id, change) {
    const mine = this.byId.get(id);
    if (!mine) return Promise.resolve();
    const now = Date.now();
    change(mine);
    mine.updated = now;
    if (!this.db) return Promise.resolve();
    this.pending.set(id, (this.pending.get(id) || 0) + 1);
    const copy = structuredClone(mine);
    const transaction = this.db.transaction(RECORDS, "readwrite");
    const records = transaction.objectStore(RECORDS);
    const reading = records.get(id);
    let result = null;
    reading.onsuccess = () => {
      if (reading.result && valid(reading.result)) {
        result = normalise(reading.result);
        change(result);
        result.updated = now;
      } else {
        result = copy; // new here, or deleted in another tab: this tab's copy is kept
      }
      records.put(result);
    };
    return done(transaction).then(() => {
      this.settle(id, result);
      this.channel?.postMessage({ id });
    }, () => this.settle(id, null));
  }

  settle(id, stored) {
    const left = this.pending.get(id) - 1;
    if (left > 0) {
      this.pending.set(id, left);
      return;
    }
    this.pending.delete(id);
    // Nothing more of ours on the way: take the stored record, with other tabs' changes.
    if (stored && this.byId.has(id) && !this.removed.has(id)) {
      const before = JSON.stringify(this.byId.get(id));
      this.byId.set(id, stored);
      if (JSON.stringify(stored) !== before) this.onChange(id);
    }
  }

  remove(id) {
    this.byId.delete(id);
    this.removed.add(id);
    if (this.currentId === id) {
      const next = this.ordered[0];
      if (next) this.select(next.id);
      else this.create();
    }
    if (!this.db) return Promise.resolve();
    const transaction = this.db.transaction(RECORDS, "readwrite");
    transaction.objectStore(RECORDS).delete(id);
    return done(transaction).then(() => this.channel?.postMessage({ id }), () => {});
  }

  async changedElsewhere({ id }) {
    if (!this.db || typeof id !== "string" || this.pending.has(id)) return;
    const stored = await request(this.db.transaction(RECORDS).objectStore(RECORDS).get(id));
    if (this.pending.has(id)) return; // ours started meanwhile: its result will carry theirs
    if (stored && valid(stored)) {
      this.removed.delete(id);
      this.byId.set(id, normalise(stored));
    } else {
      this.byId.delete(id);
      if (this.currentId === id) {
        const next = this.ordered[0];
        if (next) this.select(next.id);
        else this.create();
      }
    }
    this.onChange(id);
  }
}

export function storedPassword() {
  try {
    return localStorage.getItem(PASSWORD_KEY);
  } catch (_) {
    return null;
  }
}

export function storePassword(password) {
  try {
    if (password === null) localStorage.removeItem(PASSWORD_KEY);
    else localStorage.setItem(PASSWORD_KEY, password);
  } catch (_) {
    // Not remembered: asked again next time.
  }
}

/** The conversation as a Markdown document. */
export function toMarkdown(conversation) {
  const lines = [`# ${titleOf(conversation)}`, ""];
  if (conversation.system) lines.push(`> System role: ${conversation.system.replace(/\n/g, "\n> ")}`, "");
  for (const message of conversation.messages) {
    // The message's own headings go below its role's ("# x" -> "### x").
    lines.push(`## ${message.role === "user" ? "You" : "Assistant"}`, "", demoteHeadings(message.content), "");
    if (message.images?.length) lines.push(...imageLines(message), "");
    if (message.status) lines.push(`*(answer ${message.status})*`, "");
    if (message.failure) lines.push(`*(not answered: ${message.failure.message})*`, "");
  }
  return lines.join("\n");
}

/**
 * The conversation as JSON: OpenAI-style roles, the system role first; a message with
 * images has OpenAI's content parts (its text, then each image as a data URL).
 */
export function toJSON(conversation) {
  const messages = [];
  if (conversation.system) messages.push({ role: "system", content: conversation.system });
  for (const message of conversation.messages) {
    const entry = { role: message.role, content: message.content };
    if (message.images?.length) {
      entry.content = [{ type: "text", text: message.content }, ...message.images.map((image) => (
        { type: "image_url", image_url: { url: dataURL(image) }, name: image.name }))];
    }
    if (message.status) entry.status = message.status;
    if (message.failure) entry.refused = message.failure.message;
    messages.push(entry);
  }
  const model = conversation.model ? { model: conversation.model } : {};
  const temperature = typeof conversation.temperature === "number" ? { temperature: conversation.temperature } : {};
  return JSON.stringify({ title: titleOf(conversation), ...model, ...temperature, messages }, null, 2);
}
