// The card that says what went wrong under a conversation, and what to do next.

const TITLES = {
  rate: "Too many requests",
  busy: "The server is busy",
  network: "Server unreachable",
  cut: "The answer was cut off",
  password: "Wrong password",
  server: "The server refused",
  client: "Nothing to send",
};

/**
 * An error card for a ChatError: its message, a Retry button (`onRetry`), and for
 * 429 / 503 a countdown from Retry-After that keeps Retry disabled until it ends.
 */
export class ErrorCard {
  constructor(error, conversationId, onRetry) {
    this.conversationId = conversationId;
    this.timer = null;
    this.title = TITLES[error.kind] || "Something went wrong";
    // A list item of the conversation, its words an alert (a list item cannot be one).
    this.element = document.createElement("li");
    this.element.className = "error-card";
    const alert = document.createElement("div");
    alert.setAttribute("role", "alert");
    this.element.append(alert);
    const title = document.createElement("strong");
    title.textContent = this.title;
    const text = document.createElement("p");
    text.textContent = error.message;
    alert.append(title, text);
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "btn retry";
    retry.textContent = "Retry";
    retry.addEventListener("click", onRetry);
    if (error.retryAfter) alert.append(this.countdown(error.retryAfter, retry));
    const actions = document.createElement("div");
    actions.className = "message-actions";
    if (error.kind !== "password" && error.kind !== "client") actions.append(retry);
    this.element.append(actions);
  }

  countdown(seconds, retry) {
    const line = document.createElement("p");
    line.className = "countdown";
    let left = seconds;
    const tick = () => {
      if (left > 0) {
        line.textContent = `You can retry in ${left} s.`;
        retry.disabled = true;
      } else {
        line.textContent = "You can retry now.";
        retry.disabled = false;
        clearInterval(this.timer);
      }
      left -= 1;
    };
    tick();
    this.timer = setInterval(tick, 1000);
    return line;
  }

  remove() {
    clearInterval(this.timer);
    this.element.remove();
  }
}
