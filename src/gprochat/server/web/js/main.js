// The chat page: conversations, the composer, streaming answers, errors.
//
// Answers belong to conversations: several may stream at once, each with its own
// Stop, and every control acts on the conversation open in this tab only.

import { copyButton, dismissUndo, offerUndo } from "./actions.js";
import { ChatError, generate } from "./api.js";
import { Attachments, ImageURLs, imagesElement, limits } from "./attachments.js";
import { closeSidebar } from "./chrome.js";
import { askPassword, editInDialog } from "./dialogs.js";
import { ErrorCard } from "./errors.js";
import { installModelPicker, modelFor, showModel } from "./models.js";
import { branchAt, branchPager, editButton, editing, editorElement, showBranch, startEditing,
  stopEditing } from "./editing.js";
import { dropVersion, nextVersion, putVersion, showVersion, versionPager } from "./versions.js";
import { installTemperature, showTemperature, temperatureFor } from "./settings.js";
import { StreamingView, copyText, renderMarkdown } from "./render.js";
import { reveal } from "./text.js";
import { Store, newId, storePassword, storedPassword, titleOf, toJSON, toMarkdown } from "./store.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="gprochat:${name}"]`)?.content ?? "";

const site = { secretKey: meta("secret-key"), passwordRequired: meta("password") === "required" };
const store = new Store();
const ui = {
  messages: $("messages"), scroller: $("scroller"), prompt: $("prompt"), composer: $("composer"),
  send: $("send"), stop: $("stop"), title: $("chat-title"), list: $("conversation-list"),
  empty: $("empty"), announcer: $("announcer"), systemBanner: $("system-banner"),
};

// The answers being streamed, by conversation id: {answer, controller, element, view, discard, savedAt}.
const answers = new Map();
// The card of a failure that is not stored (an answer cut off), by conversation id.
const liveCards = new Map();
// The cards of refused messages (stored with the message), by message id: kept
// across redraws so that their countdowns go on.
const refusalCards = new Map();
// How often, at most, a streaming answer is written to the store (a reload or a
// crash keeps what arrived up to then).
const SAVE_EVERY_MS = 400;
const PAINT_EVERY_MS = 100;
let stickToBottom = true;
const imageURLs = new ImageURLs();
const attachments = new Attachments({ composer: ui.composer, prompt: ui.prompt, announce });
// The conversation drawn now.
let shownId = null;

// ---- changes to conversations (each one an operation on a record) --------------

const upsert = (message) => (conversation) => {
  const at = conversation.messages.findIndex((m) => m.id === message.id);
  const copy = { ...message };
  if (at >= 0) conversation.messages[at] = copy;
  else conversation.messages.push(copy);
};
const removeMessage = (id) => (conversation) => {
  conversation.messages = conversation.messages.filter((m) => m.id !== id);
};
const refuse = (id, failure) => (conversation) => {
  const message = conversation.messages.find((m) => m.id === id);
  if (message) message.failure = failure;
};
/** A refused message, retried: no longer refused, and last (what is asked now). */
const resend = (id) => (conversation) => {
  const message = conversation.messages.find((m) => m.id === id);
  if (!message) return;
  delete message.failure;
  conversation.messages = conversation.messages.filter((m) => m.id !== id);
  conversation.messages.push(message);
};

// ---- rendering ---------------------------------------------------------------

function messageElement(message, index, conversation) {
  const item = document.createElement("li");
  item.className = `message ${message.role}`;
  item.dataset.index = String(index);
  item.dataset.id = message.id;
  const who = document.createElement("h2");
  who.className = "visually-hidden";
  who.textContent = message.role === "user" ? "You said:" : "Assistant:";
  const body = document.createElement("div");
  body.className = "bubble";
  if (message.role === "user") {
    if (editing?.messageId === message.id) body.append(editorElement(message, editHandlers(conversation.id, message.id)));
    else body.textContent = message.content;
  } else {
    body.classList.add("markdown");
    renderMarkdown(body, message.content);
  }
  item.append(who);
  if (message.images?.length) item.append(imagesElement(message, imageURLs));
  if (message.content || !message.images?.length) item.append(body);
  if (message.role === "assistant") item.append(messageActions(message, index, conversation));
  else item.append(userActions(message, conversation));
  return item;
}

function userActions(message, conversation) {
  const actions = document.createElement("div");
  actions.className = "message-actions";
  if (message.content) actions.append(copyButton(message.content, "Copy message"));
  const branches = branchPager(message, (shown) => pageVersion(conversation.id, message.id, showBranch(message.id, shown)));
  if (branches) actions.append(branches);
  if (!answers.has(conversation.id) && editing?.messageId !== message.id) {
    actions.append(editButton(() => {
      startEditing(conversation.id, message);
      renderAfter(conversation.id);
      ui.messages.querySelector(`li[data-id="${CSS.escape(message.id)}"] textarea`)?.focus();
    }));
  }
  return actions;
}

function editHandlers(id, messageId) {
  return {
    onCancel: () => {
      stopEditing();
      renderAfter(id);
      ui.messages.querySelector(`li[data-id="${CSS.escape(messageId)}"] .edit`)?.focus();
    },
    onSave: (text) => {
      stopEditing();
      if (answers.has(id)) return renderAfter(id);
      dropLiveCard(id);
      store.update(id, branchAt(messageId, text));
      renderAfter(id);
      ui.prompt.focus();
      ask(id);
    },
  };
}

function messageActions(message, index, conversation) {
  const actions = document.createElement("div");
  actions.className = "message-actions";
  if (message.status) {
    const note = document.createElement("span");
    note.className = `status-note ${message.status}`;
    note.textContent = message.status === "stopped" ? "Stopped" : "Incomplete: the answer was cut off";
    actions.append(note);
  }
  const pager = versionPager(message, (shown) => pageVersion(conversation.id, message.id, showVersion(message.id, shown)));
  if (pager) actions.append(pager);
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "link-btn";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", "Copy answer");
  copy.addEventListener("click", () => copyText(message.content, copy));
  actions.append(copy);
  const isLast = index === conversation.messages.length - 1;
  if (isLast && !answers.has(conversation.id)) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "link-btn retry";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", "Retry: answer again");
    retry.addEventListener("click", () => retryLast(conversation.id));
    actions.append(retry);
  }
  return actions;
}

function refusalCard(message, conversationId) {
  let card = refusalCards.get(message.id);
  if (!card) {
    const { kind, message: text, retryAt } = message.failure;
    const retryAfter = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : null;
    card = new ErrorCard(new ChatError(kind, text, { retryAfter }), conversationId,
      () => retryRefused(conversationId, message.id));
    refusalCards.set(message.id, card);
  }
  return card.element;
}

/** Draw the open conversation; `toBottom` scrolls down even if the person had scrolled up. */
function renderConversation(toBottom = true) {
  const conversation = store.current;
  if (!conversation) return;
  shownId = conversation.id;
  const run = answers.get(conversation.id);
  const items = [];
  const shownCards = new Set();
  imageURLs.begin();
  conversation.messages.forEach((message, index) => {
    if (run && message.id === run.answer.id) return; // drawn live, below
    items.push(messageElement(message, index, conversation));
    if (message.failure) {
      items.push(refusalCard(message, conversation.id));
      shownCards.add(message.id);
    }
  });
  for (const [id, card] of refusalCards) {
    if (!shownCards.has(id) && !store.conversations.some((c) => c.messages.some((m) => m.id === id && m.failure))) {
      card.remove();
      refusalCards.delete(id);
    }
  }
  if (run && run.element) items.push(run.element);
  const live = liveCards.get(conversation.id);
  if (live) items.push(live.element);
  ui.messages.replaceChildren(...items);
  imageURLs.end();
  ui.empty.hidden = items.length > 0;
  ui.title.textContent = reveal(titleOf(conversation));
  document.title = `${reveal(titleOf(conversation))} · gprochat`;
  ui.systemBanner.hidden = !conversation.system;
  ui.systemBanner.textContent = conversation.system ? `System role: ${conversation.system}` : "";
  showModel(conversation);
  showTemperature(conversation);
  setBusy(Boolean(run));
  renderList();
  if (toBottom) scrollToBottom();
}

function renderList() {
  const items = store.ordered.map((conversation) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conversation";
    button.textContent = reveal(titleOf(conversation));
    button.dataset.id = conversation.id;
    if (answers.has(conversation.id)) {
      button.classList.add("answering");
      const note = document.createElement("span");
      note.className = "visually-hidden";
      note.textContent = " (answering)";
      button.append(note);
    }
    if (conversation.id === store.currentId) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => selectConversation(conversation.id));
    item.append(button);
    return item;
  });
  ui.list.replaceChildren(...items);
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.composer.classList.toggle("busy", busy);
}

// ---- following the answer -------------------------------------------------------
//
// The view stays at the bottom while the person is there (within FOLLOW_PX of it):
// as an answer grows, as the composer grows, as the window changes. Reading the
// scroller's size right after the page changed makes the browser lay the page out
// there and then (a long code block's layout, on every paint), so nothing reads it
// then: a scroll event (dispatched at the start of a frame, the layout done) says
// whether the person is at the bottom, and a ResizeObserver (called after the frame's
// layout, before it is painted) moves the view down, at most once a frame.
const FOLLOW_PX = 48;
const thread = ui.scroller.querySelector(".thread");
const follower = new ResizeObserver(() => {
  if (stickToBottom) ui.scroller.scrollTop = ui.scroller.scrollHeight;
});
follower.observe(thread);
follower.observe(ui.scroller);

/** Go to the bottom and follow from there (a new message, a conversation opened). */
function scrollToBottom() {
  stickToBottom = true;
  // Observed afresh, the thread is reported after the next layout even if its size
  // did not change (another conversation of the same height).
  follower.unobserve(thread);
  follower.observe(thread);
}

// Only a move up leaves the bottom: the scroll event of a move down made by `follower`
// arrives a frame later, when the answer may have grown again in between.
let lastTop = 0;
ui.scroller.addEventListener("scroll", () => {
  const top = ui.scroller.scrollTop;
  const atBottom = ui.scroller.scrollHeight - top - ui.scroller.clientHeight < FOLLOW_PX;
  stickToBottom = top < lastTop ? atBottom : stickToBottom || atBottom;
  lastTop = top;
});

function announce(text) {
  ui.announcer.textContent = "";
  // A fresh text node in a later task, so that screen readers announce a repeat too.
  setTimeout(() => { ui.announcer.textContent = text; }, 50);
}

// ---- errors ------------------------------------------------------------------

function dropLiveCard(conversationId) {
  liveCards.get(conversationId)?.remove();
  liveCards.delete(conversationId);
}

// ---- sending -----------------------------------------------------------------

/**
 * Answer the last message of conversation `id`, unless it is already answering;
 * `into` names an answer to retry: the new one becomes its next version.
 */
async function ask(id, into = null) {
  if (answers.has(id) || !store.get(id)) return;
  dropLiveCard(id);
  if (site.passwordRequired && !storedPassword()) {
    await askPassword();
    return ask(id, into);
  }
  const password = site.passwordRequired ? storedPassword() : null;
  const conversation = store.get(id);
  // Refused messages stay in the conversation, shown refused, but are not sent.
  const sendable = conversation.messages.filter((m) => !m.failure && m.id !== into);
  const question = sendable[sendable.length - 1];
  const controller = new AbortController();
  const retried = into ? conversation.messages.find((m) => m.id === into) : null;
  const answer = { id: retried ? into : newId(), role: "assistant", content: "" };
  const version = retried ? nextVersion(retried) : 0;
  const run = { answer, version, controller, element: null, discard: false, savedAt: 0, paintedAt: 0 };
  answers.set(id, run);
  if (store.currentId === id) renderConversation();
  else renderList();
  announce("Answering…");
  let pending = false;
  const paint = () => {
    pending = false;
    run.paintedAt = performance.now();
    if (answers.get(id) !== run || run.discard) return;
    if (!run.element) {
      run.element = document.createElement("li");
      run.element.className = "message assistant streaming";
      run.element.setAttribute("aria-busy", "true");
      const body = document.createElement("div");
      body.className = "bubble markdown";
      run.element.append(body);
      run.view = new StreamingView(body);
    }
    run.view.update(answer.content);
    if (store.currentId === id) {
      if (!run.element.isConnected) renderConversation(false);
    }
  };
  paint();
  let failure = null;
  try {
    await generate({
      messages: sendable,
      system: conversation.system,
      model: await modelFor(conversation),
      temperature: temperatureFor(conversation),
      password,
      secretKey: site.secretKey,
      limits: { images: limits.images, bodyBytes: limits.bodyBytes },
      signal: controller.signal,
      onText: (text) => {
        answer.content += text;
        if (!run.discard && Date.now() - run.savedAt >= SAVE_EVERY_MS) {
          run.savedAt = Date.now();
          store.update(id, putVersion(answer.id, version, { ...answer, status: "incomplete" }));
        }
        if (!pending) {
          pending = true;
          // At most one paint every PAINT_EVERY_MS: each one lays the answer out again.
          const wait = run.paintedAt + PAINT_EVERY_MS - performance.now();
          if (wait > 0) setTimeout(() => requestAnimationFrame(paint), wait);
          else requestAnimationFrame(paint);
        }
      },
    });
  } catch (error) {
    if (controller.signal.aborted) answer.status = "stopped";
    else failure = error instanceof ChatError ? error : new ChatError("server", String(error.message || error));
  }
  if (answers.get(id) === run) answers.delete(id);
  if (run.discard) {
    renderAfter(id);
    return;
  }
  if (failure && failure.kind === "cut") answer.status = "incomplete";
  if (answer.content) run.view?.finish(answer.content); // its DOM becomes the answer's
  if (answer.content) store.update(id, putVersion(answer.id, version, answer));
  else store.update(id, dropVersion(answer.id, version));
  if (failure && failure.kind !== "password") {
    if (answer.content || !question || retried) {
      liveCards.set(id, new ErrorCard(failure, id, () => retryLast(id)));
    } else {
      const retryAt = failure.retryAfter ? Date.now() + failure.retryAfter * 1000 : null;
      store.update(id, refuse(question.id, { kind: failure.kind, message: failure.message, retryAt }));
    }
  }
  renderAfter(id);
  if (!failure) announce(answer.status === "stopped" ? "Stopped." : answer.content);
  else if (failure.kind === "password") {
    storePassword(null);
    if (await askPassword(failure.message)) ask(id);
  } else announce(`${failure.message}`);
}

function renderAfter(id) {
  if (store.currentId === id) renderConversation(false);
  else renderList();
}

async function send() {
  await attachments.reading;
  const text = ui.prompt.value;
  if (!text.trim() && !attachments.images.length) return;
  await store.ready;
  const id = store.currentId;
  if (answers.has(id)) return; // this conversation is answering: Stop first
  const refusal = attachments.refusal(text);
  if (refusal) {
    attachments.showError(refusal);
    announce(refusal);
    return;
  }
  const images = attachments.take();
  dismissUndo();
  ui.prompt.value = "";
  resizePrompt();
  dropLiveCard(id);
  const message = { id: newId(), role: "user", content: text };
  if (images.length) message.images = images;
  store.update(id, upsert(message));
  renderConversation();
  ask(id);
}

function stop(id = store.currentId) {
  const run = answers.get(id);
  if (!run) return;
  run.controller.abort(); // nothing more arrives from here on
  if (id === store.currentId) setBusy(false); // shown now, not after the answer is redrawn
}

/** Stop the answer of `id` and keep nothing of it (the conversation is cleared or deleted). */
function discard(id) {
  const run = answers.get(id);
  if (!run) return;
  run.discard = true;
  run.controller.abort();
  answers.delete(id);
}

function retryLast(id) {
  const conversation = store.get(id);
  if (answers.has(id) || !conversation) return;
  const last = conversation.messages[conversation.messages.length - 1];
  if (!last) return;
  dropLiveCard(id);
  if (last.failure) store.update(id, resend(last.id));
  renderAfter(id);
  // An answer retried is kept: the new one becomes its next version.
  ask(id, last.role === "assistant" ? last.id : null);
}

/** Show another version of message `messageId` (`operation`); focus stays on the pager. */
function pageVersion(id, messageId, operation) {
  if (answers.has(id)) {
    // Another version would change what the streaming answer follows: not now.
    announce("Wait until the answer is complete (or stop it) to see another version.");
    return;
  }
  const before = document.activeElement?.classList.contains("version-prev") ? "version-prev" : "version-next";
  store.update(id, operation);
  renderAfter(id);
  const pager = ui.messages.querySelector(`li[data-id="${CSS.escape(messageId)}"] .version-pager`);
  pager?.querySelector(`.${before}`)?.focus();
  const spoken = pager?.querySelector(".version-spoken");
  if (spoken) announce(spoken.textContent);
}

function retryRefused(id, messageId) {
  if (answers.has(id)) return;
  dropLiveCard(id);
  store.update(id, resend(messageId));
  renderAfter(id);
  ask(id);
}

// ---- conversations -----------------------------------------------------------

function selectConversation(id) {
  store.select(id);
  closeSidebar();
  renderConversation();
  ui.prompt.focus();
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function fileName(conversation, extension) {
  const base = titleOf(conversation).replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "").slice(0, 60);
  return `${base || "conversation"}.${extension}`;
}

// ---- wiring ------------------------------------------------------------------

function resizePrompt() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 240)}px`;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (event) => {
  // An IME composing a word uses Enter to confirm it: that must never send.
  if (event.isComposing || event.keyCode === 229) return;
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    send();
  }
});
ui.prompt.addEventListener("input", resizePrompt);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !document.querySelector("dialog[open]")) stop();
});
ui.stop.addEventListener("click", () => stop());
$("clear").addEventListener("click", () => {
  const id = store.currentId;
  discard(id);
  dropLiveCard(id);
  const cleared = structuredClone(store.current.messages);
  store.update(id, (conversation) => { conversation.messages = []; });
  renderConversation();
  ui.prompt.focus();
  // Undo puts the cleared messages back (before any sent since), stored like any change.
  if (cleared.length) {
    offerUndo("Conversation cleared.", () => {
      store.update(id, (conversation) => { conversation.messages = [...cleared, ...conversation.messages]; });
      renderAfter(id);
      ui.prompt.focus();
    });
  }
});
$("new-chat").addEventListener("click", () => {
  const current = store.current;
  if (current.messages.length || current.system || answers.has(current.id)) store.create();
  closeSidebar();
  renderConversation();
  ui.prompt.focus();
});
$("delete").addEventListener("click", () => {
  const conversation = store.current;
  if (conversation.messages.length && !confirm(`Delete “${reveal(titleOf(conversation))}”?`)) return;
  discard(conversation.id);
  dropLiveCard(conversation.id);
  store.remove(conversation.id);
  renderConversation();
});
$("rename").addEventListener("click", () => {
  const id = store.currentId;
  editInDialog("rename-dialog", "rename-input", titleOf(store.current), (value) => {
    store.update(id, (conversation) => { conversation.title = value.trim(); });
    renderAfter(id);
  });
});
$("system-role").addEventListener("click", () => {
  const id = store.currentId;
  editInDialog("system-dialog", "system-input", store.current.system, (value) => {
    store.update(id, (conversation) => { conversation.system = value.trim(); });
    renderAfter(id);
  });
});
$("export-md").addEventListener("click", () => {
  download(fileName(store.current, "md"), "text/markdown", toMarkdown(store.current));
});
$("export-json").addEventListener("click", () => {
  download(fileName(store.current, "json"), "application/json", toJSON(store.current));
});
// Leaving (or reloading) mid-answer keeps what arrived, marked incomplete (what was
// written while it streamed, and this last write if the browser lets it finish).
window.addEventListener("pagehide", () => {
  for (const [id, run] of answers) {
    if (run.answer.content && !run.discard) {
      store.update(id, putVersion(run.answer.id, run.version, { ...run.answer, status: "incomplete" }));
    }
  }
  store.keepUnsaved();
});
// A conversation changed (in another tab, or this tab's write took theirs in): redraw.
store.onChange = (id) => {
  if (id === store.currentId || shownId !== store.currentId) renderConversation(false);
  else renderList();
};

installModelPicker(store);
installTemperature(store);
store.ready.then(() => {
  renderConversation();
  if (site.passwordRequired && !storedPassword()) askPassword();
  else ui.prompt.focus();
  document.documentElement.classList.add("ready");
});
