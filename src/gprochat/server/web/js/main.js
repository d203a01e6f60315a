// The chat page: conversations, the composer, streaming answers, errors.

import { ChatError, checkPassword, generate } from "./api.js";
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
  sidebar: $("sidebar"), scrim: $("scrim"), toggleSidebar: $("toggle-sidebar"),
};

// The answer being streamed, if any: which conversation, its message, the controller.
let active = null;
// The error shown under the conversation (with its countdown timer), if any.
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
  clearInterval(shownError.timer);
  shownError.element.remove();
  shownError = null;
}

function showError(error, conversation) {
  clearError();
  const element = document.createElement("li");
  element.className = "error-card";
  element.setAttribute("role", "alert");
  const title = document.createElement("strong");
  const text = document.createElement("p");
  const actions = document.createElement("div");
  actions.className = "message-actions";
  const titles = {
    rate: "Too many requests", busy: "The server is busy", network: "Server unreachable",
    cut: "The answer was cut off", password: "Wrong password", server: "The server refused",
    client: "Nothing to send",
  };
  title.textContent = titles[error.kind] || "Something went wrong";
  text.textContent = error.message;
  element.append(title, text);
  const retry = document.createElement("button");
  retry.type = "button";
  retry.className = "btn retry";
  retry.textContent = "Retry";
  retry.addEventListener("click", () => retryLast());
  if (error.kind !== "password" && error.kind !== "client") actions.append(retry);
  const record = { element, timer: null, conversationId: conversation.id };
  if (error.retryAfter) {
    const countdown = document.createElement("p");
    countdown.className = "countdown";
    let left = error.retryAfter;
    const tick = () => {
      if (left > 0) {
        countdown.textContent = `You can retry in ${left} s.`;
        retry.disabled = true;
      } else {
        countdown.textContent = "You can retry now.";
        retry.disabled = false;
        clearInterval(record.timer);
      }
      left -= 1;
    };
    tick();
    record.timer = setInterval(tick, 1000);
    element.append(countdown);
  }
  element.append(actions);
  shownError = record;
  if (conversation.id === store.currentId) {
    ui.messages.append(element);
    scrollToBottom();
  }
  announce(`${title.textContent}. ${error.message}`);
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
  if (answer.content) conversation.messages.push(answer);
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

// ---- password ----------------------------------------------------------------

function askPassword(reason = "") {
  const dialog = $("password-dialog");
  const input = $("password-input");
  const error = $("password-error");
  error.textContent = reason ? `${reason} Enter the right one.` : "";
  input.value = "";
  return new Promise((resolve) => {
    const form = $("password-form");
    const onSubmit = async (event) => {
      event.preventDefault();
      const password = input.value;
      if (!password) return;
      try {
        if (await checkPassword(password)) {
          storePassword(password);
          form.removeEventListener("submit", onSubmit);
          dialog.close();
          resolve(true);
          return;
        }
        error.textContent = "Wrong password: the server did not accept it. Check it (it is case-sensitive) or ask the site's operator.";
      } catch (failure) {
        error.textContent = failure.message;
      }
      input.select();
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
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

function editInDialog(dialogId, inputId, value, apply) {
  const dialog = $(dialogId);
  const input = $(inputId);
  input.value = value;
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok") apply(input.value);
  }, { once: true });
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
}

function openSidebar() {
  ui.sidebar.classList.add("open");
  ui.scrim.hidden = false;
  ui.toggleSidebar.setAttribute("aria-expanded", "true");
  ui.sidebar.querySelector("button")?.focus();
}

function closeSidebar() {
  ui.sidebar.classList.remove("open");
  ui.scrim.hidden = true;
  ui.toggleSidebar.setAttribute("aria-expanded", "false");
}

// Cancel buttons are not submit buttons: Enter in a field must choose the form's OK.
for (const button of document.querySelectorAll("dialog [data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close("cancel"));
}

// ---- the "more" menu -----------------------------------------------------------

const more = $("more");
const moreMenu = $("more-menu");

function closeMenu(focusButton = false) {
  if (moreMenu.hidden) return;
  moreMenu.hidden = true;
  more.setAttribute("aria-expanded", "false");
  if (focusButton) more.focus();
}

more.addEventListener("click", () => {
  if (!moreMenu.hidden) return closeMenu();
  moreMenu.hidden = false;
  more.setAttribute("aria-expanded", "true");
  moreMenu.querySelector("button").focus();
});
moreMenu.addEventListener("click", () => closeMenu());
moreMenu.addEventListener("keydown", (event) => {
  const items = [...moreMenu.querySelectorAll("button")];
  const at = items.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.stopPropagation();
    closeMenu(true);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    items[(at + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
  }
});
document.addEventListener("click", (event) => {
  if (!moreMenu.hidden && !event.target.closest(".menu-wrap")) closeMenu();
});
moreMenu.addEventListener("focusout", (event) => {
  if (event.relatedTarget && !moreMenu.contains(event.relatedTarget) && event.relatedTarget !== more) closeMenu();
});

// ---- theme -------------------------------------------------------------------

function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function showThemeButton() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  $("theme").setAttribute("aria-label", `Switch to ${next} theme`);
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
$("theme").addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem("gprochat:theme", next);
  } catch (_) {
    // Not remembered.
  }
  showThemeButton();
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", showThemeButton);
ui.toggleSidebar.addEventListener("click", () => {
  if (ui.sidebar.classList.contains("open")) closeSidebar();
  else openSidebar();
});
ui.scrim.addEventListener("click", closeSidebar);
ui.sidebar.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && ui.sidebar.classList.contains("open")) {
    closeSidebar();
    ui.toggleSidebar.focus();
  }
});
whenLibraryLoaded(() => {
  renderConversation(false);
});
// Another tab changed the conversations: show them (unless this one is answering).
window.addEventListener("storage", (event) => {
  if (event.key && event.key.startsWith("gprochat:conversations") && !active) {
    store.load();
    renderConversation();
  }
});

showThemeButton();
renderConversation();
document.documentElement.classList.add("ready");
if (site.passwordRequired && !storedPassword()) askPassword();
else ui.prompt.focus();
