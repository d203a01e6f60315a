// Headings written inside a message, moved down a level or two, so that in an
// exported conversation they sit under its role headings ("## You") instead of
// beside them. Only real headings move: a "#" line in a code block stays as it is.

const ATX = /^((?:[ \t]*(?:>|[-+*]|\d+[.)])?[ \t]*)*?)(#{1,6})(?=[ \t]|$)/;

/** `markdown` with every heading `by` levels deeper (at most level 6). */
export function demoteHeadings(markdown, by = 2) {
  if (!window.markdownit || !markdown) return markdown;
  const lines = markdown.split("\n");
  const tokens = window.markdownit({ html: false }).parse(markdown, {});
  tokens.forEach((token, at) => {
    if (token.type !== "heading_open" || !token.map) return;
    const level = Math.min(6, Number(token.tag.slice(1)) + by);
    const [start, end] = token.map;
    if (token.markup.startsWith("#")) {
      lines[start] = lines[start].replace(ATX, (_, prefix) => `${prefix}${"#".repeat(level)}`);
    } else {
      // A setext heading (text, then a line of = or -): one ATX line, in its place.
      const text = tokens[at + 1].content.replace(/\n/g, " ");
      const prefix = lines[start].match(/^[ \t]*(?:>[ \t]?)*/)[0];
      lines[start] = `${prefix}${"#".repeat(level)} ${text}`;
      for (let line = start + 1; line < end; line += 1) lines[line] = null;
    }
  });
  return lines.filter((line) => line !== null).join("\n");
}
