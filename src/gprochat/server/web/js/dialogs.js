// The page's dialogs: the password gate, and editing a title or a system role.

import { checkPassword } from "./api.js";
import { storePassword } from "./store.js";

const $ = (id) => document.getElementById(id);

// Cancel buttons are not submit buttons: Enter in a field must choose the form's OK.
for (const button of document.querySelectorAll("dialog [data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close("cancel"));
}

/**
 * Ask for the site password until /api/auth accepts one, then remember it.
 * Resolves true once accepted; `reason` says why it is asked (again).
 */
export function askPassword(reason = "") {
  const dialog = $("password-dialog");
  const form = $("password-form");
  const input = $("password-input");
  const error = $("password-error");
  error.textContent = reason ? `${reason} Enter the right one.` : "";
  input.value = "";
  return new Promise((resolve) => {
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
        error.textContent = "Wrong password: the server did not accept it. "
          + "Check it (it is case-sensitive) or ask the site's operator.";
      } catch (failure) {
        error.textContent = failure.message;
      }
      input.select();
    };
    form.addEventListener("submit", onSubmit);
    // Without the password the site answers nothing: Esc does not dismiss the gate.
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

/** Edit `value` in a dialog; `apply(newValue)` runs only if the person chose OK. */
export function editInDialog(dialogId, inputId, value, apply) {
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
