// The protocol, in the browser: sign, send, stream, and explain failures.
// URLs are relative to the page, so a site served under a path prefix works too.
//
// A request to /api/generate carries the conversation as Gemini turns, the time in
// milliseconds, the site password and sign = sha256_hex(`${time}:${text}:${secretKey}`),
// where text is the last (user) message's text, and, when the conversation chose one,
// the model (our extension: GET api/models lists them), and its temperature (another,
// settings.js). The answer is plain UTF-8 text, streamed; a body that ends without chunked encoding's last chunk was cut.

const encoder = new TextEncoder();

/** sha256 hex of `${time}:${text}:${secretKey}` (UTF-8), as the server checks it. */
export async function sign(time, text, secretKey) {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(`${time}:${text}:${secretKey}`));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The wire messages for a conversation: Gemini roles, consecutive turns of one role
 * merged; a message's images follow its text as inline_data parts. When `limits`
 * ({images, bodyBytes}) would be passed, the images of the oldest turns are left out
 * (they stay in the conversation, only not sent again); the last turn's never are.
 */
export function wireMessages(messages, system, limits = {}) {
  const turns = [];
  if (system && system.trim()) {
    // The protocol has no system field: the instructions open the conversation.
    turns.push({ role: "user", text: `System instructions for this conversation:\n${system.trim()}`, images: [] });
    turns.push({ role: "model", text: "Understood. I will follow these instructions.", images: [] });
  }
  for (const message of messages) {
    const role = message.role === "assistant" ? "model" : "user";
    const images = message.images || [];
    if (!message.content && !images.length) continue;
    const last = turns[turns.length - 1];
    if (last && last.role === role) {
      if (message.content) last.text += last.text ? `\n\n${message.content}` : message.content;
      last.images.push(...images);
    } else turns.push({ role, text: message.content || "", images: [...images] });
  }
  leaveOutOldImages(turns, limits);
  return turns.map((turn) => ({
    role: turn.role,
    parts: [{ text: turn.text }, ...(turn.images || []).map((image) => ({
      inline_data: { mime_type: image.type, data: image.data },
    }))],
  }));
}

function leaveOutOldImages(turns, { images: most = 0, bodyBytes = 0 }) {
  const count = () => turns.reduce((sum, turn) => sum + (turn.images?.length || 0), 0);
  const weight = () => turns.reduce((sum, turn) => sum + 2 * turn.text.length + 64
    + (turn.images || []).reduce((bytes, image) => bytes + image.data.length + 64, 0), 256);
  for (const turn of turns.slice(0, -1)) {
    while (turn.images?.length && ((most && count() > most) || (bodyBytes && weight() > bodyBytes))) {
      turn.images.shift();
    }
  }
}

/** A failure the page can explain: `kind` says which, `retryAfter` is in seconds. */
export class ChatError extends Error {
  constructor(kind, message, { status = 0, retryAfter = null } = {}) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const data = JSON.parse(text);
    if (data && data.error && data.error.message) return String(data.error.message);
    if (data && data.message) return String(data.message);
  } catch (_) {
    // Not JSON: the raw text is the message.
  }
  return text.trim() || `The server answered ${response.status} ${response.statusText}.`;
}

async function toChatError(response) {
  const message = await errorMessage(response);
  const status = response.status;
  const retryAfter = retryAfterSeconds(response);
  if (status === 401 && /password/i.test(message)) return new ChatError("password", message, { status });
  if (status === 429) return new ChatError("rate", message, { status, retryAfter: retryAfter ?? 60 });
  if (status === 503) return new ChatError("busy", message, { status, retryAfter: retryAfter ?? 5 });
  return new ChatError("server", message, { status, retryAfter });
}

/**
 * Stream an answer: `onText(piece)` for each decoded piece. Resolves when the body
 * ended properly; rejects with a ChatError (`cut` when the body broke off), or with
 * the AbortError when `signal` was aborted.
 */
export async function generate({ messages, system, model, temperature, password, secretKey, signal, onText, limits }) {
  const wire = wireMessages(messages, system, limits);
  const last = wire[wire.length - 1];
  if (!last || last.role !== "user") throw new ChatError("client", "There is no question to answer.");
  const time = Date.now();
  const body = JSON.stringify({
    messages: wire,
    time,
    pass: password || null,
    sign: await sign(time, last.parts.map((part) => part.text ?? "").join(""), secretKey),
    ...(model ? { model } : {}),
    ...(typeof temperature === "number" ? { temperature } : {}),
  });
  let response;
  try {
    response = await fetch("api/generate", {
      method: "POST",
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body,
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (signal.aborted) throw error;
    throw new ChatError("network", "Cannot reach the server: check your connection, then retry.");
  }
  if (!response.ok) throw await toChatError(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = decoder.decode(value, { stream: true });
      if (text) onText(text);
    }
  } catch (error) {
    if (signal.aborted) throw error;
    throw new ChatError("cut", "The answer was cut off before it ended (the connection broke or the model failed).");
  }
  const rest = decoder.decode();
  if (rest) onText(rest);
}

/** Ask /api/auth whether `password` is right: true, false, or a ChatError. */
export async function checkPassword(password) {
  let response;
  try {
    response = await fetch("api/auth", {
      method: "POST",
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body: JSON.stringify({ pass: password }),
      cache: "no-store",
    });
  } catch (_) {
    throw new ChatError("network", "Cannot reach the server: check your connection, then try again.");
  }
  if (!response.ok) throw await toChatError(response);
  const data = await response.json();
  return data.code === 0;
}
