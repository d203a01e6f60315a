// The page's dialogs: the password gate, and editing a title or a system role.

import { checkPassword } from "./api.js";
import { storePassword } from "./store.js";

const $ = (id) => document.getElementById(id);

// Cancel buttons are not submit buttons: Enter in a field must choose the form's OK.
for (const button of document.querySelectorAll("dialog [data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close("cancel"));
}

// The gate being shown, if any: asking again while it is open joins it, so one
// submit checks the password once.
let gate = null;

// Without the password the site answers nothing: Esc never dismisses the gate.
// Chromium lets a second Esc close a dialog whose cancel event was refused, unless
// the key itself is refused; and should it close anyway, it opens again.
const gateDialog = $("password-dialog");
gateDialog.addEventListener("cancel", (event) => event.preventDefault());
gateDialog.addEventListener("keydown", (event) => {
  if (event.key === "Escape") event.preventDefault();
});
gateDialog.addEventListener("close", () => {
  if (gate) setTimeout(() => gate && !gateDialog.open && gateDialog.showModal(), 0);
});

/**
 * Ask for the site password until /api/auth accepts one, then remember it.
 * Resolves true once accepted; `reason` says why it is asked (again).
 */
export function askPassword(reason = "") {
  const dialog = $("password-dialog");
  const input = $("password-input");
  const error = $("password-error");
  if (reason || !gate) error.textContent = reason ? `${reason} Enter the right one.` : "";
  if (!gate) {
    input.value = "";
    gate = new Promise((resolve) => {
      const form = $("password-form");
      let checking = false;
      const onSubmit = async (event) => {
        event.preventDefault();
        const password = input.value;
        if (!password || checking) return;
        checking = true;
        try {
          if (await checkPassword(password)) {
            storePassword(password);
            form.removeEventListener("submit", onSubmit);
            gate = null;
            dialog.close();
            resolve(true);
            return;
          }
          error.textContent = "Wrong password: the server did not accept it. "
            + "Check it (it is case-sensitive) or ask the site's operator.";
        } catch (failure) {
          error.textContent = failure.message;
        } finally {
          checking = false;
        }
        input.select();
      };
      form.addEventListener("submit", onSubmit);
    });
  }
  if (!dialog.open) dialog.showModal();
  input.focus();
  return gate;
}

/**
 * Focus what opened a dialog once it closes; if that is gone or hidden (an item of
 * the ⋯ menu, which closed), the ⋯ button: never <body>.
 */
export function returnFocus(opener) {
  const visible = opener?.isConnected && opener !== document.body && opener.checkVisibility();
  (visible ? opener : $("more")).focus();
}

/** Edit `value` in a dialog; `apply(newValue)` runs only if the person chose OK. */
export function editInDialog(dialogId, inputId, value, apply) {
  const dialog = $(dialogId);
  const input = $(inputId);
  input.value = value;
  const opener = document.activeElement;
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok") apply(input.value);
    returnFocus(opener);
  }, { once: true });
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
}
