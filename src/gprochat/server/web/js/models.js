// The model picker: which of the server's models answers a conversation.
//
// The server lists its models at api/models (the default first; on a site with a
// password, only to a request that carries it). With more than one, the composer
// shows a <select>; the choice is stored with the conversation (its `model`) and goes
// with each of its requests, retries included. A conversation that never chose one
// follows the server's default and sends none. A stored model the server no longer
// offers is not sent: the default answers, and a note says so.

import { storedPassword } from "./store.js";

const $ = (id) => document.getElementById(id);

// {models, default} once the server said, else null (not asked yet, or it failed).
let offered = null;
let asking = null;

async function fetchModels() {
  const password = storedPassword();
  const response = await fetch("api/models", {
    headers: password ? { Authorization: `Bearer ${password}` } : {},
    cache: "no-store",
  });
  if (!response.ok) return null; // locked and no (right) password yet, or an old server
  const data = await response.json();
  if (!data || !Array.isArray(data.models) || !data.models.length) return null;
  const models = data.models.map(String);
  return { models, default: models.includes(data.default) ? data.default : models[0] };
}

/** The server's models, asked once it answers (asked again while it has not). */
export function loadModels() {
  if (offered) return Promise.resolve(offered);
  asking ??= fetchModels().catch(() => null).then((result) => {
    offered = result;
    asking = null;
    return result;
  });
  return asking;
}

/** The model to send for `conversation`: its own if the server offers it, else null (the default). */
export async function modelFor(conversation) {
  const chosen = conversation?.model;
  if (!chosen) return null;
  const known = await loadModels();
  // The list unknown (the network failed): send the choice; the server names the models if it is gone.
  if (!known) return chosen;
  return known.models.includes(chosen) ? chosen : null;
}

/** Show `conversation`'s model in the picker, and the note when the server dropped it. */
export function showModel(conversation) {
  const picker = $("model-picker");
  const select = $("model");
  const note = $("model-note");
  if (!offered || !conversation) {
    picker.hidden = true;
    note.hidden = true;
    return;
  }
  const names = offered.models;
  const labels = names.map((name) => (name === offered.default ? `${name} (default)` : name));
  if ([...select.options].map((option) => option.textContent).join("\n") !== labels.join("\n")) {
    select.replaceChildren(...names.map((name, index) => new Option(labels[index], name)));
  }
  const chosen = conversation.model;
  const gone = Boolean(chosen) && !names.includes(chosen);
  select.value = chosen && !gone ? chosen : offered.default;
  picker.hidden = names.length < 2;
  note.hidden = !gone;
  note.textContent = gone
    ? `${chosen}, this conversation's model, is no longer offered here: ${offered.default} (the default) answers.`
    : "";
}

/** Wire the picker to `store`: a choice is the open conversation's, stored with it. */
export function installModelPicker(store) {
  const select = $("model");
  select.addEventListener("change", () => {
    const id = store.currentId;
    const model = select.value;
    store.update(id, (conversation) => { conversation.model = model; });
    showModel(store.get(id));
  });
  const refresh = () => loadModels().then(() => showModel(store.current));
  // The models of a locked site come once its password is known: after the gate closes.
  $("password-dialog").addEventListener("close", () => {
    if (!offered) refresh();
  });
  store.ready.then(refresh);
}
