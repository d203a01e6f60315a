// Model output is untrusted text. It becomes HTML in three steps, each a guard:
// markdown-it with html: false (raw HTML in the text stays text; javascript: and
// similar links are refused), then DOMPurify over the result, then the
// Content-Security-Policy header, which would stop any script that slipped through.
// The policy also requires Trusted Types: the only HTML that reaches the DOM is
// DOMPurify's output, and the only script URLs are our own vendored files.
//
// highlight.js and KaTeX are large and most answers need neither, yet evaluating either
// holds the main thread for 50 ms or more. highlight.js is loaded once the page is idle
// after it loads (its languages then compiled a few at a time); KaTeX on the first
// formula (loaded ahead as well, it slowed the page's first answer: docs/benchmarks.md,
// "B9"). What was rendered before a library arrived is filled in place (a code block or
// formula per task); nothing is drawn again.

import { revealLinks } from "./text.js";

const assets = document.body.dataset.assets;
const loaded = { hljs: null, katex: null };
let wantsHighlight = false;
let wantsMath = false;
// Code blocks and formulas rendered before their library arrived ([data-pending]).
const pending = new Set();

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const scriptUrls = window.trustedTypes?.createPolicy("gprochat", {
  createScriptURL(url) {
    if (url.startsWith(`${assets}/vendor/`) && !url.includes("..")) return url;
    throw new TypeError(`not one of the page's own scripts: ${url}`);
  },
});

function loadScript(path) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    const url = `${assets}/${path}`;
    script.src = scriptUrls ? scriptUrls.createScriptURL(url) : url;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${path}`));
    document.head.append(script);
  });
}

function loadStyle(path) {
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = `${assets}/${path}`;
  document.head.append(link);
}

function loadHighlight() {
  loaded.hljs ??= loadScript("vendor/highlight.js/highlight.min.js").then(fillPending);
  return loaded.hljs;
}

function loadMath() {
  if (!loaded.katex) {
    loadStyle("vendor/katex/katex.min.css");
    loaded.katex = loadScript("vendor/katex/katex.min.js").then(fillPending);
  }
  return loaded.katex;
}

function ensureLibraries() {
  if (wantsHighlight) loadHighlight().catch(() => {});
  if (wantsMath) loadMath().catch(() => {});
}

function whenIdle(callback) {
  if (window.requestIdleCallback) window.requestIdleCallback(callback);
  else setTimeout(() => callback({ timeRemaining: () => 10 }), 200);
}

// Each language is compiled on its first use (all of them for a block without one):
// done here, in idle time, a few at a time, it is not done in the middle of an answer.
function compileLanguages(names) {
  whenIdle((deadline) => {
    do {
      const language = names.shift();
      if (language) {
        try {
          window.hljs.highlight("", { language, ignoreIllegals: true });
        } catch (_) { /* a language that fails to compile is compiled (and fails) on use */ }
      }
    } while (names.length && deadline.timeRemaining() > 5);
    if (names.length) compileLanguages(names);
  });
}

/** Load highlight.js, then compile its languages, in idle time. */
function preloadHighlight() {
  whenIdle(() => loadHighlight().then(() => {
    compileLanguages(window.hljs.listLanguages());
  }).catch(() => {}));
}

if (document.readyState === "complete") preloadHighlight();
else window.addEventListener("load", preloadHighlight, { once: true });

const mathEngine = {
  renderToString(tex, options) {
    if (window.katex) return window.katex.renderToString(tex, options);
    wantsMath = true;
    return `<code class="math-pending" data-pending="math" data-display="${options.displayMode ? "yes" : "no"}">${escapeHtml(tex)}</code>`;
  },
};

// maxSize caps sizes written in the formula (\rule{3000px}...) at 20 em; maxExpand
// bounds macro expansion (a formula cannot make the tab work for ever).
const KATEX_OPTIONS = { throwOnError: false, output: "htmlAndMathml", maxSize: 20, maxExpand: 500 };

// Longer code blocks are shown without colours: highlighting 250 KB of code holds the
// main thread for half a second or more (and guessing its language far longer).
const HIGHLIGHT_MAX_CHARS = 20_000;

function highlight(code, language) {
  if (code.length > HIGHLIGHT_MAX_CHARS) return "";
  wantsHighlight = true;
  const hljs = window.hljs;
  if (!hljs) return "";
  try {
    if (language && hljs.getLanguage(language)) {
      return hljs.highlight(code, { language, ignoreIllegals: true }).value;
    }
    return hljs.highlightAuto(code).value;
  } catch (_) {
    return "";
  }
}

let markdown = null;

function parser() {
  if (markdown) return markdown;
  markdown = window.markdownit({ html: false, linkify: true, breaks: true, highlight });
  markdown.use(window.texmath, {
    engine: mathEngine,
    delimiters: ["dollars", "brackets"],
    katexOptions: { ...KATEX_OPTIONS }, // (texmath writes displayMode into it)
  });
  return markdown;
}

window.DOMPurify?.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

function decorateCodeBlocks(element, copyLabel) {
  for (const pre of element.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code || pre.parentElement.classList.contains("code-block")) continue;
    const language = (code.className.match(/language-([\w+#.-]+)/) || [])[1] || "text";
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    const head = document.createElement("div");
    head.className = "code-head";
    const label = document.createElement("span");
    label.textContent = language;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-btn";
    copy.textContent = copyLabel;
    copy.setAttribute("aria-label", `Copy ${language} code`);
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    head.append(label, copy);
    pre.replaceWith(wrapper);
    wrapper.append(head, pre);
    code.classList.add("hljs");
  }
  for (const table of element.querySelectorAll("table")) {
    if (table.parentElement.classList.contains("table-wrap")) continue;
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    table.replaceWith(wrap);
    wrap.append(table);
  }
}

export async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (_) {
    // Not a secure context (plain http on a remote host): the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    ok = document.execCommand("copy");
    area.remove();
  }
  if (button) {
    const before = button.textContent;
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = before; }, 1500);
  }
}

// The last long answers rendered (a copy of their nodes), by text: a conversation is
// drawn again on every change, and parsing and sanitising a long answer each time is
// what costs. An answer's streamed rendering is kept as its final one (see
// StreamingView.finish).
const rendered = new Map();
const RENDERED_KEPT = 20;

function keepRendered(text, element) {
  rendered.delete(text);
  if (rendered.size >= RENDERED_KEPT) rendered.delete(rendered.keys().next().value);
  rendered.set(text, element.cloneNode(true));
}

function sanitize(html) {
  return window.DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true, mathMl: true, svg: true }, // KaTeX draws roots with SVG
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
    FORBID_ATTR: ["id", "name"],
    RETURN_TRUSTED_TYPE: true,
  });
}

const hasPending = (element) => element.querySelector("[data-pending]") !== null;

/** Render `text` (Markdown from the model) into `element`, safely. */
export function renderMarkdown(element, text) {
  // What is replaced needs no filling in.
  for (const node of element.querySelectorAll("[data-pending]")) pending.delete(node);
  const kept = rendered.get(text);
  if (kept) {
    element.replaceChildren(...kept.cloneNode(true).childNodes);
    for (const block of element.querySelectorAll(".code-block")) {
      const copy = block.querySelector(".copy-btn");
      const code = block.querySelector("code");
      copy?.addEventListener("click", () => copyText(code.textContent, copy));
    }
    return;
  }
  element.innerHTML = sanitize(parser().render(text));
  decorateCodeBlocks(element, "Copy");
  revealLinks(element);
  if (!window.hljs) {
    for (const code of element.querySelectorAll("pre > code")) {
      if (code.textContent.length > HIGHLIGHT_MAX_CHARS) continue;
      code.dataset.pending = "highlight";
      pending.add(code);
    }
  }
  for (const node of element.querySelectorAll("[data-pending=math]")) pending.add(node);
  ensureLibraries();
  // Kept only once complete: what is pending is filled in these nodes, not the copy.
  if (text.length > 2000 && !hasPending(element)) keepRendered(text, element);
}

/** Highlight, or typeset, one pending node in place; false if its library is not here. */
function fill(node) {
  if (node.dataset.pending === "highlight") {
    if (!window.hljs) return false;
    const language = (node.className.match(/language-([\w+#.-]+)/) || [])[1];
    const html = highlight(node.textContent, language);
    if (html) node.innerHTML = sanitize(html);
    delete node.dataset.pending;
    return true;
  }
  if (!window.katex) return false;
  const holder = document.createElement("span");
  try {
    const options = { ...KATEX_OPTIONS, displayMode: node.dataset.display === "yes" };
    holder.innerHTML = sanitize(window.katex.renderToString(node.textContent, options));
  } catch (_) {
    holder.textContent = node.textContent;
  }
  node.replaceWith(...holder.childNodes);
  return true;
}

// Pending nodes on the page first; others (an answer streaming out of view) after.
const FILL_SLICE_MS = 8;

function fillPending() {
  const started = performance.now();
  const nodes = [...pending].sort((a, b) => b.isConnected - a.isConnected);
  for (const node of nodes) {
    if (performance.now() - started > FILL_SLICE_MS) {
      setTimeout(fillPending, 0); // the rest in a task of its own: frames can go first
      return;
    }
    if (fill(node)) pending.delete(node);
  }
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const CODE_CHUNK_LINES = 100;

/**
 * An answer being streamed into `element`: Markdown blocks that are finished (a
 * blank line, outside code fences and display math, followed by a line that
 * starts unindented, or an unindented code fence) are rendered once and kept; only the
 * growing tail is rendered again, and an open code block in the tail grows as plain text
 * (highlighted once, when it closes). When the answer ends, what was streamed is kept
 * as its rendering in this tab (rendering 40 KB whole would hold the main thread for up
 * to a second); a reload renders it whole.
 */
export class StreamingView {
  constructor(element) {
    this.element = element;
    this.reset();
  }

  /**
   * The answer is complete (or stopped) at `text`: show all of it, and let the next
   * renderMarkdown of that text take these nodes instead of parsing it again (a long
   * answer rendered whole would hold the main thread for up to a second).
   */
  finish(text) {
    this.update(text);
    if (this.fence && this.fenceStart === this.done && !this.keepsCode(text.length)) {
      this.code = null;
      renderMarkdown(this.tail, text.slice(this.done));
    }
    const holder = document.createElement("div");
    holder.append(...this.element.childNodes);
    holder.querySelector(":scope > .tail")?.replaceWith(...this.tail.childNodes);
    if (!hasPending(holder)) keepRendered(text, holder);
  }

  reset() {
    this.tail = document.createElement("div");
    this.tail.className = "tail";
    this.element.replaceChildren(this.tail);
    this.done = 0; // characters rendered into kept blocks
    this.scanned = 0; // characters scanned, whole lines only
    this.fence = null; // the open code fence, if any
    this.math = false; // inside $$ ... $$ or \[ ... \]
    this.candidate = 0; // just after a blank line, if the next line may start a block
    this.boundary = 0; // where the finished blocks end
    this.fenceStart = -1; // where the open fence's line starts, if it is unindented
    this.fenceBody = 0; // where the open fence's code starts
    this.code = null; // the <code> of an open code block shown as it grows
    this.chunk = null; // its last text node
    this.chunkLines = 0;
    this.shown = 0; // where the text shown in it ends
    this.closed = -1; // where the closing fence of the grown code block starts, once seen
    this.closedNext = 0;
  }

  update(text) {
    this.textSource = text;
    let start = this.scanned;
    for (let end = text.indexOf("\n", start); end >= 0; end = text.indexOf("\n", start)) {
      this.scanLine(text.slice(start, end), end + 1);
      start = end + 1;
    }
    this.scanned = start;
    // The line begun after a blank line starts unindented: the block before is done.
    if (this.candidate && /^\S/.test(text.slice(start, start + 1))) {
      this.boundary = this.candidate;
      this.candidate = 0;
    }
    if (this.closed >= 0) {
      // A code block grown as text and too long to highlight: rendering it again would
      // give the same, so what was grown is kept (its closing fence left out).
      if (this.keepsCode(this.closed)) {
        this.tail.before(...this.tail.childNodes);
        this.done = this.closedNext;
      }
      this.closed = -1;
      this.code = null;
    }
    if (this.boundary > this.done) {
      const holder = document.createElement("div");
      renderMarkdown(holder, text.slice(this.done, this.boundary));
      for (const block of holder.children) {
        // Kept blocks scrolled out of view are not laid out again as the answer grows.
        block.style.contentVisibility = "auto";
        block.style.containIntrinsicSize = "auto 3em";
      }
      this.tail.before(...holder.childNodes);
      this.done = this.boundary;
    }
    if (this.fence && this.fenceStart === this.done) {
      this.growCode(text);
      return;
    }
    this.code = null;
    renderMarkdown(this.tail, text.slice(this.done) || (this.done ? "" : "…"));
  }

  /** If the grown code block is long enough to keep as it is, make it end at `end`. */
  keepsCode(end) {
    if (!this.code || end - this.fenceBody <= HIGHLIGHT_MAX_CHARS) return false;
    if (this.shown < end) this.append(this.textSource.slice(this.shown, end));
    let extra = this.shown - end; // part of the closing fence's line, shown as code
    for (let node = this.chunk; extra > 0 && node; node = node.parentNode.previousSibling?.firstChild) {
      const cut = Math.min(extra, node.length);
      node.deleteData(node.length - cut, cut);
      extra -= cut;
    }
    this.shown = end;
    return true;
  }

  append(data) {
    if (!this.chunk || (this.chunkLines >= CODE_CHUNK_LINES && this.chunk.data.endsWith("\n"))) {
      // Lines in blocks of their own: the browser lays out only the newest block again.
      const block = document.createElement("span");
      block.style.display = "block";
      // Blocks scrolled out of view are not laid out again (their last size is kept).
      block.style.contentVisibility = "auto";
      block.style.containIntrinsicSize = `auto ${CODE_CHUNK_LINES * 1.55}em`;
      this.chunk = block.appendChild(document.createTextNode(""));
      this.chunkLines = 0;
      this.code.append(block);
    }
    this.chunk.appendData(data);
    this.chunkLines += data.split("\n").length - 1;
    this.shown += data.length;
  }

  /** The tail is an open code block: append what arrived as plain text, parse nothing. */
  growCode(text) {
    if (!this.code) {
      const opening = text.slice(this.fenceStart, this.fenceBody).trim();
      const language = opening.slice(this.fence.length).trim().split(/\s+/)[0];
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (language) code.className = `language-${language}`;
      code.style.display = "block"; // its blocks of lines inside an inline box: slow layout
      pre.append(code);
      this.tail.replaceChildren(pre);
      decorateCodeBlocks(this.tail, "Copy");
      this.code = code;
      this.chunk = null;
      this.shown = this.fenceBody;
    }
    if (text.length > this.shown) this.append(text.slice(this.shown));
  }

  scanLine(line, next) {
    const fence = line.match(FENCE);
    if (this.fence) {
      if (fence && fence[1][0] === this.fence[0] && fence[1].length >= this.fence.length
          && !line.trim().slice(fence[1].length).trim()) {
        this.fence = null;
        // An unindented fence is a block of its own: it is finished where it closes.
        if (this.fenceStart >= 0) {
          this.boundary = next;
          if (this.fenceStart === this.done) {
            this.closed = next - line.length - 1;
            this.closedNext = next;
          }
        }
      }
      return;
    }
    if (fence) {
      this.fence = fence[1];
      this.candidate = 0;
      // An unindented fence starts a block of its own, whatever came before (it ends a
      // paragraph, a list or a quote): what came before is finished.
      this.fenceStart = -1;
      if (!/^\s/.test(line)) {
        this.fenceStart = next - line.length - 1;
        this.fenceBody = next;
        this.boundary = Math.max(this.boundary, this.fenceStart);
      }
      return;
    }
    const toggles = (line.match(/\$\$/g) || []).length + (line.match(/\\\[|\\\]/g) || []).length;
    if (toggles % 2) this.math = !this.math;
    if (this.math) return;
    if (!line.trim()) {
      this.candidate = next;
    } else if (this.candidate) {
      // An indented line may continue the block before (a list item's paragraph).
      if (!/^\s/.test(line)) this.boundary = this.candidate;
      this.candidate = 0;
    }
  }
}
