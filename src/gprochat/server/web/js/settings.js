// Per-conversation settings: the temperature.
//
// The composer's foot has a labelled number field (0 to 2, empty for the server's
// default). A value is stored with the open conversation (its `temperature`) and sent
// with each of its requests (our extension to /api/generate); a conversation with
// none sends none, and the backend answers at its own default.

const $ = (id) => document.getElementById(id);

/** The temperature to send for `conversation`, or null (the server's default). */
export function temperatureFor(conversation) {
  const value = conversation?.temperature;
  return typeof value === "number" && value >= 0 && value <= 2 ? value : null;
}

/** Show `conversation`'s temperature in the field (empty: the default). */
export function showTemperature(conversation) {
  const input = $("temperature");
  if (document.activeElement === input) return; // never overwrite what is being typed
  const value = temperatureFor(conversation);
  input.value = value === null ? "" : String(value);
}

/** Wire the field to `store`: a valid value is the open conversation's, stored with it. */
export function installTemperature(store) {
  const input = $("temperature");
  const save = () => {
    const id = store.currentId;
    const text = input.value.trim();
    const value = text === "" ? null : Number(text);
    if (value !== null && !(Number.isFinite(value) && value >= 0 && value <= 2)) {
      input.setAttribute("aria-invalid", "true");
      return;
    }
    input.removeAttribute("aria-invalid");
    store.update(id, (conversation) => {
      if (value === null) delete conversation.temperature;
      else conversation.temperature = value;
    });
  };
  input.addEventListener("input", save);
  input.addEventListener("change", () => {
    save();
    if (input.getAttribute("aria-invalid") !== "true") showTemperature(store.current);
  });
}
