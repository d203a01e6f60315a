// An answer's versions: Retry adds one instead of throwing the previous answer away.
//
// An assistant message with more than one version keeps them all in `versions`
// ([{content, status?}], oldest first) and the one shown in `version` (its index);
// its own `content` and `status` are the shown version's, so that everything else
// (drawing, export, the history sent with the next message) uses the version shown.
// A message with one version has neither field. The operations below are store
// operations (functions of a conversation record), applied in each tab and in
// IndexedDB like every other change.

function versionsOf(message) {
  return message.versions ?? [{ content: message.content, ...(message.status ? { status: message.status } : {}) }];
}

function show(message, versions, index) {
  const chosen = versions[index];
  message.content = chosen.content;
  if (chosen.status) message.status = chosen.status;
  else delete message.status;
  if (versions.length > 1) {
    message.versions = versions;
    message.version = index;
  } else {
    delete message.versions;
    delete message.version;
  }
}

/** How many versions `message` has. */
export const versionCount = (message) => message.versions?.length ?? 1;

/** The index a new version of `message` takes (the one after its last). */
export const nextVersion = (message) => versionCount(message);

/**
 * Write `{content, status?}` as version `index` of answer `id` and show it; the
 * answer is added (as `{id, role: "assistant"}`) if the conversation lacks it.
 */
export const putVersion = (id, index, answer) => (conversation) => {
  const version = { content: answer.content, ...(answer.status ? { status: answer.status } : {}) };
  const message = conversation.messages.find((m) => m.id === id);
  if (!message) {
    conversation.messages.push({ id, role: "assistant", ...version });
    return;
  }
  const versions = versionsOf(message).slice();
  versions[Math.min(index, versions.length)] = version;
  show(message, versions, Math.min(index, versions.length - 1));
};

/** Drop version `index` of answer `id` (the message goes with its last version). */
export const dropVersion = (id, index) => (conversation) => {
  const message = conversation.messages.find((m) => m.id === id);
  if (!message) return;
  const versions = versionsOf(message).filter((_, at) => at !== index);
  if (!versions.length) conversation.messages = conversation.messages.filter((m) => m !== message);
  else show(message, versions, Math.min(message.version ?? 0, versions.length - 1));
};

/** Show version `index` of answer `id`. */
export const showVersion = (id, index) => (conversation) => {
  const message = conversation.messages.find((m) => m.id === id);
  if (!message?.versions || index < 0 || index >= message.versions.length) return;
  show(message, message.versions, index);
};

function pagerButton(className, label, text, disabled, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `link-btn ${className}`;
  button.textContent = text;
  button.setAttribute("aria-label", label);
  // aria-disabled rather than disabled: a button that keeps focus when it reaches the end.
  if (disabled) button.setAttribute("aria-disabled", "true");
  button.addEventListener("click", () => { if (!disabled) onClick(); });
  return button;
}

/** "‹ 2/3 ›" for an answer with several versions (null for one); `onShow(index)` pages. */
export function versionPager(message, onShow) {
  const count = versionCount(message);
  return count < 2 ? null : pager(count, message.version ?? count - 1, "Versions of this answer", onShow);
}

/** "‹ 2/3 ›": `count` versions, `shown` the one shown (from 0), `onShow(index)` pages. */
export function pager(count, shown, name, onShow) {
  const pager = document.createElement("span");
  pager.className = "version-pager";
  pager.setAttribute("role", "group");
  pager.setAttribute("aria-label", name);
  const position = document.createElement("span");
  position.className = "version-position";
  position.textContent = `${shown + 1}/${count}`;
  position.setAttribute("aria-hidden", "true");
  // Read out in words (an aria-label on a plain span is not announced everywhere).
  const spoken = document.createElement("span");
  spoken.className = "visually-hidden version-spoken";
  spoken.textContent = `Version ${shown + 1} of ${count}`;
  pager.append(
    pagerButton("version-prev", "Previous version", "‹", shown === 0, () => onShow(shown - 1)),
    position,
    spoken,
    pagerButton("version-next", "Next version", "›", shown === count - 1, () => onShow(shown + 1)),
  );
  return pager;
}
