// Editing a sent message: the conversation branches from there.
//
// Edit on a user message opens its text in place (Enter or "Save and send" sends it,
// Shift+Enter is a new line, Esc or Cancel leaves it as it was). Saving keeps the
// message's earlier text and everything after it as a branch: the message gets
// `branches` ([{content, rest?}], oldest first; `rest` the messages that followed that
// text, absent for the branch shown, whose messages are the conversation's own) and
// `branch` (the one shown). "‹ 2/2 ›" on the message pages through the branches, like
// an answer's versions. Its images stay with every branch (only the text is edited).

import { pager } from "./versions.js";

/** Send `content` as a new branch of user message `id`: the messages after it are kept. */
export const branchAt = (id, content) => (conversation) => {
  const at = conversation.messages.findIndex((m) => m.id === id);
  if (at < 0) return;
  const message = conversation.messages[at];
  const branches = (message.branches ?? [{ content: message.content }]).map((branch) => ({ ...branch }));
  const shown = message.branch ?? 0;
  branches[shown] = { content: message.content, rest: conversation.messages.slice(at + 1) };
  branches.push({ content });
  message.branches = branches;
  message.branch = branches.length - 1;
  message.content = content;
  delete message.failure; // sent again: whatever refused the old text is past
  conversation.messages = conversation.messages.slice(0, at + 1);
};

/** Show branch `index` of user message `id`: its text and the messages that followed it. */
export const showBranch = (id, index) => (conversation) => {
  const at = conversation.messages.findIndex((m) => m.id === id);
  const message = conversation.messages[at];
  if (!message?.branches || index < 0 || index >= message.branches.length) return;
  const branches = message.branches.map((branch) => ({ ...branch }));
  branches[message.branch ?? 0] = { content: message.content, rest: conversation.messages.slice(at + 1) };
  const chosen = branches[index];
  message.content = chosen.content;
  conversation.messages = [...conversation.messages.slice(0, at + 1), ...(chosen.rest ?? [])];
  branches[index] = { content: chosen.content };
  message.branches = branches;
  message.branch = index;
};

/** "‹ 2/3 ›" for a user message with several branches (null for one). */
export function branchPager(message, onShow) {
  const count = message.branches?.length ?? 1;
  return count < 2 ? null : pager(count, message.branch ?? count - 1, "Versions of this message", onShow);
}

/** The message being edited, if any: {conversationId, messageId, draft}. */
export let editing = null;

export function startEditing(conversationId, message) {
  editing = { conversationId, messageId: message.id, draft: message.content };
}

export function stopEditing() {
  editing = null;
}

/** The editor for `message` (being edited): `onSave(text)`, `onCancel()`. */
export function editorElement(message, { onSave, onCancel }) {
  const form = document.createElement("form");
  form.className = "message-editor";
  const label = document.createElement("label");
  label.className = "visually-hidden";
  label.textContent = "Edited message";
  const input = document.createElement("textarea");
  input.id = `edit-${message.id}`;
  label.htmlFor = input.id;
  input.value = editing?.draft ?? message.content;
  input.rows = Math.min(10, Math.max(2, input.value.split("\n").length));
  input.addEventListener("input", () => { if (editing) editing.draft = input.value; });
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "btn btn-primary";
  save.textContent = "Save and send";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "btn";
  cancel.textContent = "Cancel";
  const buttons = document.createElement("div");
  buttons.className = "message-editor-buttons";
  buttons.append(cancel, save);
  form.append(label, input, buttons);
  const submit = () => { if (input.value.trim()) onSave(input.value); };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  cancel.addEventListener("click", onCancel);
  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      onCancel();
    }
  });
  return form;
}

/** The Edit button of a user message. */
export function editButton(onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-btn edit";
  button.textContent = "Edit";
  button.setAttribute("aria-label", "Edit message");
  button.addEventListener("click", onClick);
  return button;
}
