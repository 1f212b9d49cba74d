// Progressive enhancement only: every page works without this file.

/** Copies text; the Clipboard API exists only in secure contexts (not on a plain-HTTP intranet address). */
function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text).then(() => true, () => legacyCopy(text));
  return Promise.resolve(legacyCopy(text));
}

/** The pre-Clipboard-API way, which plain-HTTP pages still allow: copy a selected, hidden textarea. */
function legacyCopy(text) {
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.top = '-1000px';
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  area.remove();
  return ok;
}

/** When nothing could copy, the text is selected so that Ctrl-C (⌘-C) copies it. */
function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('[data-copy]');
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  void copyText(source.textContent.trim()).then((ok) => {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    if (!ok) selectText(source);
    button.textContent = ok ? (button.dataset.copied || '✓') : (button.dataset.selected || label);
    setTimeout(() => { button.textContent = label; }, 1600);
  });
});
