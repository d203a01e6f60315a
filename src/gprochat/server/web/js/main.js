// The chat page: conversations, the composer, streaming answers, errors.

import { ChatError, generate } from "./api.js";
import { closeSidebar } from "./chrome.js";
import { askPassword, editInDialog } from "./dialogs.js";
import { ErrorCard } from "./errors.js";
import { copyText, renderMarkdown, whenLibraryLoaded } from "./render.js";
import { Store, storePassword, storedPassword, titleOf, toJSON, toMarkdown } from "./store.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="gprochat:${name}"]`)?.content ?? "";

const site = { secretKey: meta("secret-key"), passwordRequired: meta("password") === "required" };
const store = new Store();
const ui = {
  messages: $("messages"), scroller: $("scroller"), prompt: $("prompt"), composer: $("composer"),
  send: $("send"), stop: $("stop"), title: $("chat-title"), list: $("conversation-list"),
  empty: $("empty"), announcer: $("announcer"), systemBanner: $("system-banner"),
};

// The answer being streamed, if any: which conversation, its message, the controller.
let active = null;
// The ErrorCard shown under a conversation, if any.
let shownError = null;
let stickToBottom = true;

// ---- rendering ---------------------------------------------------------------

function messageElement(message, index, conversation) {
  const item = document.createElement("li");
  item.className = `message ${message.role}`;
  item.dataset.index = String(index);
  const who = document.createElement("h3");
  who.className = "visually-hidden";
  who.textContent = message.role === "user" ? "You said:" : "Assistant:";
  const body = document.createElement("div");
  body.className = "bubble";
  if (message.role === "user") {
    body.textContent = message.content;
  } else {
    body.classList.add("markdown");
    renderMarkdown(body, message.content);
  }
  item.append(who, body);
  if (message.role === "assistant") item.append(messageActions(message, index, conversation));
  return item;
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
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "link-btn";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", "Copy answer");
  copy.addEventListener("click", () => copyText(message.content, copy));
  actions.append(copy);
  const isLast = index === conversation.messages.length - 1;
  if (isLast && !active) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "link-btn retry";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", "Retry: answer again");
    retry.addEventListener("click", () => retryLast());
    actions.append(retry);
  }
  return actions;
}

/** Draw the current conversation; `toBottom` scrolls down even if the person had scrolled up. */
function renderConversation(toBottom = true) {
  const conversation = store.current;
  ui.messages.replaceChildren(
    ...conversation.messages.map((message, index) => messageElement(message, index, conversation)),
  );
  ui.empty.hidden = conversation.messages.length > 0;
  ui.title.textContent = titleOf(conversation);
  document.title = `${titleOf(conversation)} · gprochat`;
  ui.systemBanner.hidden = !conversation.system;
  ui.systemBanner.textContent = conversation.system ? `System role: ${conversation.system}` : "";
  if (active && active.conversation.id === conversation.id && active.element) {
    ui.messages.append(active.element);
  }
  if (shownError && shownError.conversationId === conversation.id) ui.messages.append(shownError.element);
  renderList();
  scrollToBottom(toBottom);
}

function renderList() {
  const items = store.ordered.map((conversation) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conversation";
    button.textContent = titleOf(conversation);
    button.dataset.id = conversation.id;
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

function scrollToBottom(force = false) {
  if (force) stickToBottom = true;
  if (stickToBottom) ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

ui.scroller.addEventListener("scroll", () => {
  const distance = ui.scroller.scrollHeight - ui.scroller.scrollTop - ui.scroller.clientHeight;
  stickToBottom = distance < 48;
});

function announce(text) {
  ui.announcer.textContent = "";
  // A fresh text node in a later task, so that screen readers announce a repeat too.
  setTimeout(() => { ui.announcer.textContent = text; }, 50);
}

// ---- errors ------------------------------------------------------------------

function clearError() {
  if (!shownError) return;
  shownError.remove();
  shownError = null;
}

function showError(error, conversation) {
  clearError();
  shownError = new ErrorCard(error, conversation.id, () => retryLast());
  if (conversation.id === store.currentId) {
    ui.messages.append(shownError.element);
    scrollToBottom();
  }
  announce(`${shownError.title}. ${error.message}`);
}

// ---- sending -----------------------------------------------------------------

async function ask(conversation) {
  clearError();
  const password = site.passwordRequired ? storedPassword() : null;
  if (site.passwordRequired && !password) {
    await askPassword();
    if (!storedPassword()) return;
    return ask(conversation);
  }
  const controller = new AbortController();
  const answer = { role: "assistant", content: "" };
  const request = { messages: conversation.messages.slice(), system: conversation.system };
  active = { conversation, answer, controller, element: null };
  setBusy(true);
  announce("Answering…");
  let pending = false;
  const paint = () => {
    pending = false;
    if (!active || active.answer !== answer || store.currentId !== conversation.id) return;
    if (!active.element) {
      ui.empty.hidden = true;
      active.element = document.createElement("li");
      active.element.className = "message assistant streaming";
      active.element.setAttribute("aria-busy", "true");
      const body = document.createElement("div");
      body.className = "bubble markdown";
      active.element.append(body);
      ui.messages.append(active.element);
    }
    renderMarkdown(active.element.firstChild, answer.content || "…");
    scrollToBottom();
  };
  paint();
  try {
    await generate({
      ...request,
      password,
      secretKey: site.secretKey,
      signal: controller.signal,
      onText: (text) => {
        answer.content += text;
        if (!pending) {
          pending = true;
          requestAnimationFrame(paint);
        }
      },
    });
    finish(conversation, answer, null);
    announce(answer.content);
  } catch (error) {
    if (controller.signal.aborted) {
      answer.status = "stopped";
      finish(conversation, answer, null);
      announce("Stopped.");
      return;
    }
    const failure = error instanceof ChatError ? error : new ChatError("server", String(error.message || error));
    if (failure.kind === "cut") answer.status = "incomplete";
    finish(conversation, answer, failure);
    if (failure.kind === "password") {
      storePassword(null);
      if (await askPassword(failure.message)) ask(conversation);
    }
  }
}

function finish(conversation, answer, failure) {
  active = null;
  setBusy(false);
  if (answer.content && !conversation.messages.includes(answer)) conversation.messages.push(answer);
  store.touch(conversation);
  if (store.currentId === conversation.id) renderConversation(false);
  else renderList();
  if (failure) showError(failure, conversation);
}

function send() {
  const text = ui.prompt.value;
  if (!text.trim() || active) return;
  const conversation = store.current;
  conversation.messages.push({ role: "user", content: text });
  ui.prompt.value = "";
  resizePrompt();
  store.touch(conversation);
  renderConversation();
  ask(conversation);
}

function stop() {
  if (active) active.controller.abort();
}

function retryLast() {
  if (active) return;
  const conversation = store.current;
  const last = conversation.messages[conversation.messages.length - 1];
  if (!last) return;
  if (last.role === "assistant") conversation.messages.pop();
  store.touch(conversation);
  renderConversation();
  ask(conversation);
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
  if (event.key === "Escape" && active && !document.querySelector("dialog[open]")) stop();
});
ui.stop.addEventListener("click", stop);
$("clear").addEventListener("click", () => {
  if (active) return;
  clearError();
  store.current.messages = [];
  store.touch(store.current);
  renderConversation();
  ui.prompt.focus();
});
$("new-chat").addEventListener("click", () => {
  const current = store.current;
  if (current.messages.length || current.system) store.create();
  clearError();
  closeSidebar();
  renderConversation();
  ui.prompt.focus();
});
$("delete").addEventListener("click", () => {
  const conversation = store.current;
  if (active && active.conversation === conversation) stop();
  if (conversation.messages.length && !confirm(`Delete “${titleOf(conversation)}”?`)) return;
  clearError();
  store.remove(conversation.id);
  renderConversation();
});
$("rename").addEventListener("click", () => {
  const conversation = store.current;
  editInDialog("rename-dialog", "rename-input", titleOf(conversation), (value) => {
    conversation.title = value.trim();
    store.touch(conversation);
    renderConversation();
  });
});
$("system-role").addEventListener("click", () => {
  const conversation = store.current;
  editInDialog("system-dialog", "system-input", conversation.system, (value) => {
    conversation.system = value.trim();
    store.touch(conversation);
    renderConversation();
  });
});
$("export-md").addEventListener("click", () => {
  download(fileName(store.current, "md"), "text/markdown", toMarkdown(store.current));
});
$("export-json").addEventListener("click", () => {
  download(fileName(store.current, "json"), "application/json", toJSON(store.current));
});
whenLibraryLoaded(() => {
  renderConversation(false);
});
// Leaving (or reloading) mid-answer keeps what arrived, marked incomplete.
window.addEventListener("pagehide", () => {
  if (!active || !active.answer.content) return;
  active.answer.status = "incomplete";
  active.conversation.messages.push(active.answer);
  store.touch(active.conversation);
});
// Another tab changed the conversations: show them (unless this one is answering).
window.addEventListener("storage", (event) => {
  if (event.key && event.key.startsWith("gprochat:conversations") && !active) {
    store.load();
    renderConversation();
  }
});

renderConversation();
document.documentElement.classList.add("ready");
if (site.passwordRequired && !storedPassword()) askPassword();
else ui.prompt.focus();
