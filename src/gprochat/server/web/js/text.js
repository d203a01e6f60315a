// Text shown as a name: titles and link texts. Characters that reorder or hide text
// (bidi controls, zero-width characters) are shown as visible markers, so that
// "\u202Egpj.exe" reads "⟨U+202E⟩gpj.exe", never "exe.jpg"; and a title made from
// Markdown is shown without its marks.

// Bidi embeddings, overrides and isolates, the directional marks, zero-width
// space / non-joiner / joiner, word joiner, the byte-order mark.
const HIDDEN = /[\u061C\u200B-\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF]/gu;
const HAS_HIDDEN = new RegExp(HIDDEN.source, "u");
const PICTOGRAPH = /\p{Extended_Pictographic}/u;
// What may sit between a pictograph and a joiner: variation selector 16, skin tones.
const MODIFIER = /[\uFE0F\u{1F3FB}-\u{1F3FF}]/u;

/** "⟨U+202E⟩" for U+202E. */
export function marker(character) {
  return `⟨U+${character.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`;
}

/** A zero-width joiner inside an emoji sequence (👩‍💻) is part of it: kept. */
function joinsEmoji(text, at) {
  const before = [...text.slice(Math.max(0, at - 4), at)];
  let last = before.pop();
  if (last && MODIFIER.test(last)) last = before.pop();
  const next = [...text.slice(at + 1, at + 3)][0];
  return Boolean(last && next && PICTOGRAPH.test(last) && PICTOGRAPH.test(next));
}

/** `text` with every hidden or reordering character replaced by its marker. */
export function reveal(text) {
  return text.replace(HIDDEN, (character, at) =>
    (character === "\u200D" && joinsEmoji(text, at) ? character : marker(character)));
}

/** The same, in the text nodes of `element` (a rendered link): markers in spans. */
export function revealIn(element) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (HAS_HIDDEN.test(node.data)) nodes.push(node);
  }
  for (const node of nodes) {
    const parts = [];
    let start = 0;
    for (const found of node.data.matchAll(HIDDEN)) {
      if (found[0] === "\u200D" && joinsEmoji(node.data, found.index)) continue;
      parts.push(node.data.slice(start, found.index));
      const shown = document.createElement("span");
      shown.className = "hidden-char";
      shown.textContent = marker(found[0]);
      parts.push(shown);
      start = found.index + found[0].length;
    }
    parts.push(node.data.slice(start));
    node.replaceWith(...parts);
  }
}

/**
 * Links in rendered Markdown: hidden characters in their text made visible, and
 * the real target named in the link's title (shown on hover and read out).
 */
export function revealLinks(element) {
  for (const link of element.querySelectorAll("a[href]")) {
    revealIn(link);
    if (!link.title) link.title = link.href;
  }
}

let inline = null;

/** One line of Markdown as plain text: "# **Hello** `world`" -> "Hello world". */
export function plainLine(line) {
  if (!window.markdownit) return line;
  inline ??= window.markdownit({ html: false, linkify: false });
  const words = [];
  for (const block of inline.parse(line, {})) {
    if (block.type === "fence" || block.type === "code_block") words.push(block.content.trim());
    for (const token of block.children ?? []) {
      if (token.type === "text" || token.type === "code_inline" || token.type === "image") words.push(token.content);
      else if (token.type === "softbreak" || token.type === "hardbreak") words.push(" ");
    }
  }
  return words.join("").replace(/\s+/g, " ").trim() || line;
}
