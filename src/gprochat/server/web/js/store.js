// Conversations, kept in this browser's localStorage.
//
// One key holds them all: {version: 1, current: id, conversations: [{id, title,
// system, messages: [{role: "user"|"assistant", content, status?}], updated}]}.
// An assistant message's status is "stopped" (the person pressed Stop) or
// "incomplete" (the answer broke off); a finished one has none.

const KEY = "gprochat:conversations:v1";
const PASSWORD_KEY = "gprochat:pass";

function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export function newConversation() {
  return { id: newId(), title: "", system: "", messages: [], updated: Date.now() };
}

export function titleOf(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((message) => message.role === "user");
  if (!first) return "New chat";
  const line = first.content.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

export class Store {
  constructor() {
    this.conversations = [];
    this.currentId = null;
    this.load();
  }

  load() {
    try {
      const data = JSON.parse(localStorage.getItem(KEY) || "null");
      if (data && Array.isArray(data.conversations)) {
        this.conversations = data.conversations.filter((c) => c && c.id && Array.isArray(c.messages));
        this.currentId = data.current;
      }
    } catch (_) {
      this.conversations = [];
    }
    if (!this.current) this.create();
  }

  save() {
    const data = { version: 1, current: this.currentId, conversations: this.conversations };
    try {
      localStorage.setItem(KEY, JSON.stringify(data));
      return true;
    } catch (_) {
      return false; // storage full or disabled: the page keeps working, unsaved
    }
  }

  get current() {
    return this.conversations.find((c) => c.id === this.currentId) || null;
  }

  /** Conversations, most recently used first. */
  get ordered() {
    return [...this.conversations].sort((a, b) => b.updated - a.updated);
  }

  create() {
    const conversation = newConversation();
    this.conversations.push(conversation);
    this.currentId = conversation.id;
    this.save();
    return conversation;
  }

  select(id) {
    if (this.conversations.some((c) => c.id === id)) {
      this.currentId = id;
      this.save();
    }
  }

  remove(id) {
    this.conversations = this.conversations.filter((c) => c.id !== id);
    if (this.currentId === id) {
      const next = this.ordered[0];
      if (next) this.currentId = next.id;
      else this.create();
    }
    this.save();
  }

  touch(conversation) {
    conversation.updated = Date.now();
    this.save();
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
    lines.push(`## ${message.role === "user" ? "You" : "Assistant"}`, "", message.content, "");
    if (message.status) lines.push(`*(answer ${message.status})*`, "");
  }
  return lines.join("\n");
}

/** The conversation as JSON: OpenAI-style roles, the system role first. */
export function toJSON(conversation) {
  const messages = [];
  if (conversation.system) messages.push({ role: "system", content: conversation.system });
  for (const message of conversation.messages) {
    const entry = { role: message.role, content: message.content };
    if (message.status) entry.status = message.status;
    messages.push(entry);
  }
  return JSON.stringify({ title: titleOf(conversation), messages }, null, 2);
}
