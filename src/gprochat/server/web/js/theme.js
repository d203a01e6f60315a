// Runs before the first paint (a classic, blocking script: the CSP forbids inline
// ones) so that a chosen theme never flashes the other one first.
try {
  const theme = localStorage.getItem("gprochat:theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch (_) {
  // Storage disabled: follow the system theme.
}
