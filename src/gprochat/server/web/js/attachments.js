// Images in a conversation: attached in the composer (button, paste, drag-and-drop),
// checked here as the server checks them, shown as removable thumbnails, then kept
// with their message, drawn in the conversation (click to enlarge) and sent as
// Gemini's inline_data parts.
//
// An image is {type, data, size, name}: its real type, read from its first bytes
// (never from the file's name or declared type: a text file renamed .png is text);
// its bytes as base64, the text that travels and that the store keeps, read once
// and never decoded and encoded again; its size in bytes; the file's name.
//
// The server's limits come from the page's <meta> tags (max-image-bytes, max-images,
// max-body-bytes): a refused file is explained under the composer and nothing is
// sent. Blob URLs made to show images are revoked once nothing shows them.

import { reveal } from "./text.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="gprochat:${name}"]`)?.content ?? "";

export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];
const ACCEPTED = "a PNG, JPEG, WebP or GIF image";
// What a message weighs in the JSON body beside its images' base64 (roles, field names).
const PART_OVERHEAD = 64;

/** The server's limits, as the page was told them (0: no limit). */
export const limits = {
  imageBytes: Number(meta("max-image-bytes")) || 0,
  images: Number(meta("max-images")) || 0,
  bodyBytes: Number(meta("max-body-bytes")) || 0,
};

/** The raster type the first bytes announce (the server's rule), or null. */
export function sniffImageType(head) {
  const starts = (...bytes) => bytes.every((byte, i) => head[i] === byte);
  const ascii = (from, text) => [...text].every((c, i) => head[from + i] === c.charCodeAt(0));
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "image/png";
  if (starts(0xff, 0xd8, 0xff)) return "image/jpeg";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "image/webp";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "image/gif";
  return null;
}

// Other formats a person may well attach, told by their first bytes so that the
// refusal names them, as the server's own refusals do (gprochat/images.py).
const OTHER_FORMATS = [
  [[0x49, 0x49, 0x2a, 0x00], "a TIFF image"],
  [[0x4d, 0x4d, 0x00, 0x2a], "a TIFF image"],
  [[0x00, 0x00, 0x01, 0x00], "an ICO icon"],
  [[0x00, 0x00, 0x02, 0x00], "a CUR cursor"],
  [[0xff, 0x0a], "a JPEG XL image"],
  [[0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20], "a JPEG XL image"],
  [[0x38, 0x42, 0x50, 0x53], "a Photoshop (PSD) image"],
  [[0x25, 0x50, 0x44, 0x46, 0x2d], "a PDF document"],
  [[0x50, 0x4b, 0x03, 0x04], "a ZIP archive (or a document in one: DOCX, ODT, EPUB)"],
  [[0x50, 0x4b, 0x05, 0x06], "a ZIP archive"],
  [[0x1f, 0x8b], "gzip-compressed data (an SVGZ drawing, or an archive)"],
  [[0x4f, 0x67, 0x67, 0x53], "an Ogg audio or video file"],
  [[0x49, 0x44, 0x33], "an MP3 audio file"],
  [[0x66, 0x4c, 0x61, 0x43], "a FLAC audio file"],
  [[0x1a, 0x45, 0xdf, 0xa3], "a Matroska or WebM video"],
];
// ISO media files (an ftyp box): the major brand says which.
const FTYP_BRANDS = {
  avif: "an AVIF image", avis: "an AVIF image sequence",
  heic: "a HEIC image", heix: "a HEIC image", heim: "a HEIC image", heis: "a HEIC image",
  hevc: "a HEIC image sequence", hevx: "a HEIC image sequence",
  mif1: "a HEIF image", msf1: "a HEIF image sequence",
};
const RIFF_FORMATS = { WAVE: "a WAVE audio file", "AVI ": "an AVI video" };

function otherFormat(head) {
  const latin1 = (from, to) => String.fromCharCode(...head.subarray(from, to));
  if (latin1(0, 2) === "BM" && head.length >= 14 && head.subarray(6, 10).every((b) => b === 0)) {
    return "a BMP image";
  }
  if (latin1(4, 8) === "ftyp") {
    const brand = latin1(8, 12);
    return FTYP_BRANDS[brand] || `an ISO media file (brand “${brand}”: a video, or an image format this server does not take)`;
  }
  if (latin1(0, 4) === "RIFF") return RIFF_FORMATS[latin1(8, 12)] || "a RIFF file (audio or video)";
  const found = OTHER_FORMATS.find(([magic]) => magic.every((byte, i) => head[i] === byte));
  return found ? found[1] : null;
}

function asText(head) {
  const utf16 = (encoding) => new TextDecoder(encoding, { fatal: true }).decode(head.subarray(0, head.length & ~1));
  try {
    if ((head[0] === 0xff && head[1] === 0xfe) || (head[0] === 0xfe && head[1] === 0xff)) {
      return utf16(head[0] === 0xff ? "utf-16le" : "utf-16be");
    }
    if (head[0] === 0x3c && head[1] === 0 && head[3] === 0) return utf16("utf-16le");
    if (head[0] === 0 && head[1] === 0x3c && head[2] === 0) return utf16("utf-16be");
  } catch (_) {
    return null;
  }
  if (head.includes(0)) return null;
  try {
    // A character cut by the end of the slice is not a reason to call it binary.
    return new TextDecoder("utf-8", { fatal: true }).decode(head, { stream: true });
  } catch (_) {
    return null;
  }
}

/** Why a file that is not one of the four raster types is refused, in words. */
function refusalOf(name, head) {
  const other = otherFormat(head);
  if (other) return `“${name}” is ${other}: attach ${ACCEPTED} (convert it).`;
  const text = asText(head);
  if (text === null) {
    return `“${name}” is not an image this server takes: its bytes are not ${ACCEPTED}, `
      + `nor another format it knows; attach ${ACCEPTED}.`;
  }
  const start = text.replace(/^[\ufeff \t\r\n]+/, "");
  const what = start.startsWith("<")
    ? (/svg/i.test(start) ? "an SVG drawing (SVG can carry scripts)" : "markup (HTML or XML)")
    : "text";
  return `“${name}” is ${what}, not an image this server takes: attach ${ACCEPTED}.`;
}

export function formatBytes(count) {
  const MiB = 1024 * 1024;
  if (count >= MiB) return `${+(count / MiB).toFixed(1)} MiB`;
  if (count >= 1024) return `${+(count / 1024).toFixed(1)} KiB`;
  return `${count} bytes`;
}

/** What a request carrying `images` (and `text`) weighs, about, in bytes. */
export function weight(images, text = "") {
  return images.reduce((sum, image) => sum + image.data.length + PART_OVERHEAD, 2 * text.length + 256);
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).slice(String(reader.result).indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Check a file and read it: an image, or an Error whose message says what is wrong. */
export async function readImage(file) {
  const name = file.name || "pasted image";
  if (file.size === 0) throw new Error(`“${name}” is empty: attach ${ACCEPTED}.`);
  if (limits.imageBytes && file.size > limits.imageBytes) {
    throw new Error(`“${name}” is ${formatBytes(file.size)}; this server takes images up to `
      + `${formatBytes(limits.imageBytes)}. Attach a smaller one.`);
  }
  const head = new Uint8Array(await file.slice(0, 32).arrayBuffer());
  const type = sniffImageType(head);
  if (!type) throw new Error(refusalOf(name, head));
  return { type, data: await base64Of(file), size: file.size, name };
}

function blobOf(image) {
  const text = atob(image.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return new Blob([bytes], { type: image.type });
}

function icon(path) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const shape = document.createElementNS("http://www.w3.org/2000/svg", "path");
  shape.setAttribute("d", path);
  svg.append(shape);
  return svg;
}

// ---- the composer's images ----------------------------------------------------

/**
 * The images attached to the message being written: `add(files)` checks and shows
 * them, `take()` hands them over (and empties the tray) when the message is sent.
 */
export class Attachments {
  constructor({ composer, prompt, announce }) {
    this.items = []; // {image, url}
    this.reading = Promise.resolve();
    this.prompt = prompt;
    this.announce = announce;
    this.tray = $("attachments");
    this.error = $("attach-error");
    this.input = $("attach-input");
    $("attach").addEventListener("click", () => this.input.click());
    this.input.addEventListener("change", () => {
      const files = [...this.input.files];
      this.input.value = "";
      this.add(files);
    });
    prompt.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (!files.length) return; // text: pasted as usual
      event.preventDefault();
      this.add(files);
    });
    const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    composer.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      composer.classList.add("dropping");
    });
    composer.addEventListener("dragleave", (event) => {
      if (!composer.contains(event.relatedTarget)) composer.classList.remove("dropping");
    });
    composer.addEventListener("drop", (event) => {
      composer.classList.remove("dropping");
      if (!carriesFiles(event)) return;
      event.preventDefault();
      this.add([...event.dataTransfer.files]);
    });
    // A file dropped beside the composer must not replace the page with itself.
    window.addEventListener("dragover", (event) => { if (carriesFiles(event)) event.preventDefault(); });
    window.addEventListener("drop", (event) => { if (carriesFiles(event)) event.preventDefault(); });
  }

  get images() {
    return this.items.map((item) => item.image);
  }

  /** Check and attach `files`, in order; the refused ones are explained, the others shown. */
  add(files) {
    // One read at a time, in order; an unexpected failure is shown, and the next works.
    this.reading = this.reading.then(() => this.addNow(files))
      .catch((error) => this.showError(`The image could not be read: ${error.message || error}`));
    return this.reading;
  }

  async addNow(files) {
    const refusals = [];
    const added = [];
    for (const file of files) {
      const name = file.name || "pasted image";
      if (limits.images && this.items.length >= limits.images) {
        refusals.push(`“${name}” was not attached: this server takes at most ${limits.images} images per message.`);
        continue;
      }
      let image;
      try {
        image = await readImage(file);
      } catch (error) {
        refusals.push(error.message);
        continue;
      }
      if (limits.bodyBytes && weight([...this.images, image]) > limits.bodyBytes) {
        refusals.push(`“${name}” was not attached: with the other images the message would weigh `
          + `${formatBytes(weight([...this.images, image]))} (base64 adds a third), and this server takes `
          + `requests up to ${formatBytes(limits.bodyBytes)}. Attach fewer or smaller images.`);
        continue;
      }
      this.items.push({ image, url: URL.createObjectURL(file) });
      added.push(name);
    }
    this.showError(refusals.join(" "));
    this.render();
    if (added.length) this.announce(`Attached: ${added.join(", ")}.`);
  }

  /** Why the message with `text` cannot be sent with these images, or "". */
  refusal(text) {
    const total = weight(this.images, text);
    if (limits.bodyBytes && total > limits.bodyBytes) {
      return `This message would weigh ${formatBytes(total)}; this server takes requests up to `
        + `${formatBytes(limits.bodyBytes)}. Remove an image or shorten the message.`;
    }
    return "";
  }

  /** The attached images, handed over for sending; the tray is emptied. */
  take() {
    const images = this.images;
    for (const item of this.items) URL.revokeObjectURL(item.url);
    this.items = [];
    this.showError("");
    this.render();
    return images;
  }

  remove(index) {
    const [item] = this.items.splice(index, 1);
    if (!item) return;
    URL.revokeObjectURL(item.url);
    this.render();
    const buttons = this.tray.querySelectorAll("button.remove");
    (buttons[Math.min(index, buttons.length - 1)] || this.prompt).focus();
    this.announce(`Removed ${item.image.name}.`);
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  render() {
    const items = this.items.map((item, index) => {
      const entry = document.createElement("li");
      entry.className = "attachment";
      const picture = document.createElement("img");
      picture.src = item.url;
      picture.alt = item.image.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.title = "Remove";
      remove.setAttribute("aria-label", `Remove image ${index + 1}: ${item.image.name}`);
      remove.append(icon("M6 6l12 12M18 6L6 18"));
      remove.addEventListener("click", () => this.remove(index));
      entry.append(picture, remove);
      return entry;
    });
    this.tray.replaceChildren(...items);
    this.tray.hidden = !items.length;
  }
}

// ---- images in the conversation --------------------------------------------

/**
 * Blob URLs for the images drawn in the conversation, one per image, made once:
 * `begin()` before a redraw, `url()` for each image drawn, `end()` revokes the
 * URLs of images no longer shown.
 */
export class ImageURLs {
  constructor() {
    this.urls = new Map();
    this.used = new Set();
  }

  begin() {
    this.used = new Set();
  }

  url(key, image) {
    this.used.add(key);
    let url = this.urls.get(key);
    if (!url) {
      url = URL.createObjectURL(blobOf(image));
      this.urls.set(key, url);
    }
    return url;
  }

  end() {
    for (const [key, url] of this.urls) {
      if (this.used.has(key)) continue;
      URL.revokeObjectURL(url);
      this.urls.delete(key);
    }
  }
}

/** A message's images, each a button that enlarges it. */
export function imagesElement(message, urls) {
  const list = document.createElement("div");
  list.className = "message-images";
  message.images.forEach((image, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "image-thumb";
    const label = `Image ${index + 1}: ${image.name || image.type}`;
    button.setAttribute("aria-label", `${label} (enlarge)`);
    button.title = "Enlarge";
    const picture = document.createElement("img");
    picture.src = urls.url(`${message.id}:${index}`, image);
    picture.alt = "";
    button.append(picture);
    button.addEventListener("click", () => enlarge(picture.src, image, label, button));
    list.append(button);
  });
  return list;
}

const viewer = $("image-dialog");
viewer?.addEventListener("close", () => {
  $("image-dialog-picture").removeAttribute("src");
  viewer.opener?.focus();
});

function enlarge(url, image, label, opener) {
  const picture = $("image-dialog-picture");
  picture.src = url;
  picture.alt = image.name || image.type;
  $("image-dialog-title").textContent = reveal(label); // a file's name shown as it is
  $("image-dialog-info").textContent = `${image.type}, ${formatBytes(image.size)}`;
  viewer.opener = opener;
  viewer.showModal();
  viewer.querySelector("[data-close]").focus();
}

/** A message's images as Markdown lines (named, not embedded). */
export function imageLines(message) {
  return (message.images || []).map((image, index) =>
    `*(image ${index + 1}: ${image.name || "unnamed"}, ${image.type}, ${formatBytes(image.size)})*`);
}

/** A message's images as data URLs (export). */
export function dataURL(image) {
  return `data:${image.type};base64,${image.data}`;
}
