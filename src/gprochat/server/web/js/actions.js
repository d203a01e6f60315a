// Small controls under messages and the composer: Copy for any message, and the
// Undo offered after Clear.

import { copyText } from "./render.js";

/** A Copy button for `text` (a <button>: reached with Tab, pressed with Enter or Space). */
export function copyButton(text, label) {
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "link-btn copy";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", label);
  copy.addEventListener("click", () => copyText(text, copy));
  return copy;
}

let offered = null;

/**
 * Say `text` ("Conversation cleared.") beside the Clear button with an Undo button;
 * `undo()` runs if pressed. It stays until pressed, dismissed (×), or another
 * offer or message replaces it: no timer hurries anyone.
 */
export function offerUndo(text, undo) {
  dismissUndo();
  const bar = document.createElement("span");
  bar.className = "undo-bar";
  bar.setAttribute("role", "status");
  const words = document.createElement("span");
  words.textContent = text;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-btn undo";
  button.textContent = "Undo";
  button.addEventListener("click", () => {
    dismissUndo();
    undo();
  });
  const close = document.createElement("button");
  close.type = "button";
  close.className = "link-btn";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => {
    dismissUndo();
    document.getElementById("prompt").focus();
  });
  bar.append(words, " ", button, close);
  document.getElementById("clear").after(bar);
  offered = bar;
}

export function dismissUndo() {
  offered?.remove();
  offered = null;
}
