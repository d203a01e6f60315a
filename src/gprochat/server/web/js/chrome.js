// The page around the conversation: the theme toggle, the ⋯ menu, the phone drawer.

const $ = (id) => document.getElementById(id);

// ---- theme: follows the system until the toggle chooses (remembered) ----------

function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function showThemeButton() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  $("theme").setAttribute("aria-label", `Switch to ${next} theme`);
}

$("theme").addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem("gprochat:theme", next);
  } catch (_) {
    // Not remembered.
  }
  showThemeButton();
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", showThemeButton);
showThemeButton();

// ---- the ⋯ menu: arrow keys move, Esc closes, a click elsewhere closes ----------

const more = $("more");
const menu = $("more-menu");

function closeMenu(focusButton = false) {
  if (menu.hidden) return;
  menu.hidden = true;
  more.setAttribute("aria-expanded", "false");
  if (focusButton) more.focus();
}

more.addEventListener("click", () => {
  if (!menu.hidden) return closeMenu();
  menu.hidden = false;
  more.setAttribute("aria-expanded", "true");
  menu.querySelector("button").focus();
});
menu.addEventListener("click", () => closeMenu());
menu.addEventListener("keydown", (event) => {
  const items = [...menu.querySelectorAll("button")];
  const at = items.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.stopPropagation();
    closeMenu(true);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    items[(at + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
  }
});
document.addEventListener("click", (event) => {
  if (!menu.hidden && !event.target.closest(".menu-wrap")) closeMenu();
});
menu.addEventListener("focusout", (event) => {
  const next = event.relatedTarget;
  if (next && !menu.contains(next) && next !== more) closeMenu();
});

// ---- the conversation list as a drawer on narrow screens -----------------------

const sidebar = $("sidebar");
const scrim = $("scrim");
const toggle = $("toggle-sidebar");

// While open, the drawer is modal: the page behind is inert (Tab stays in the
// drawer), and Esc closes it from wherever focus is.
const behind = document.querySelector("main");

export function openSidebar() {
  sidebar.classList.add("open");
  scrim.hidden = false;
  behind.inert = true;
  toggle.setAttribute("aria-expanded", "true");
  sidebar.querySelector("button")?.focus();
}

export function closeSidebar(focusToggle = false) {
  if (!sidebar.classList.contains("open")) return;
  sidebar.classList.remove("open");
  scrim.hidden = true;
  behind.inert = false;
  toggle.setAttribute("aria-expanded", "false");
  if (focusToggle) toggle.focus();
}

toggle.addEventListener("click", () => {
  if (sidebar.classList.contains("open")) closeSidebar();
  else openSidebar();
});
scrim.addEventListener("click", () => closeSidebar(true));
// Capturing, so the page's own Esc (stop the answer) does not also run.
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && sidebar.classList.contains("open") && !document.querySelector("dialog[open]")) {
    event.stopImmediatePropagation();
    closeSidebar(true);
  }
}, true);
// Tab from the drawer's last control goes to its first, Shift+Tab the other way
// (inert keeps focus out of the page, not inside the drawer: the browser's own
// controls would come next).
sidebar.addEventListener("keydown", (event) => {
  if (event.key !== "Tab" || !sidebar.classList.contains("open")) return;
  const controls = [...sidebar.querySelectorAll("button, a[href], [tabindex]:not([tabindex='-1'])")]
    .filter((element) => element.checkVisibility());
  if (!controls.length) return;
  const first = controls[0];
  const last = controls[controls.length - 1];
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
});
// Wider than a phone again: the drawer is the sidebar, never modal.
matchMedia("(max-width: 760px)").addEventListener("change", (query) => {
  if (!query.matches) closeSidebar();
});
